import Crypto
import Foundation

/// The dashboard the admin endpoint serves on `GET /`: one page of plain HTML, CSS and JavaScript, no framework and
/// nothing loaded from elsewhere. It polls `/v1/ready`, `/v1/plugins`, `/v1/topics` and `/v1/groups` once a
/// second, `/v1/health` every tenth poll, and `/metrics` and raft-log's `status` operation (cluster members) every
/// thirtieth; it says so when an endpoint is missing (404). Plugin actions (stop, start, restart, upgrade,
/// rollback) are POSTs that carry the admin token, asked for on the first 401 and kept in `sessionStorage`.
///
/// Every string the page puts into the DOM is escaped (topic and group names are user input), and the page is
/// served with a Content-Security-Policy that runs only its own script and style (by hash) and connects only to
/// the node it came from.
public enum Dashboard {
    public static let contentType = "text/html; charset=utf-8"

    /// The page's style sheet.
    static let style = #"""
        :root{--fg:#1d2433;--mute:#667085;--line:#e4e7ec;--bg:#f8f9fb;--ok:#067647;--warn:#b54708;--bad:#b42318}
        *{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,sans-serif;color:var(--fg);background:var(--bg)}
        header{display:flex;gap:12px;align-items:baseline;padding:12px 20px;background:#fff;border-bottom:1px solid var(--line)}
        h1{font-size:18px;margin:0}h2{font-size:15px;margin:0 0 8px}small,.mute{color:var(--mute)}
        main{padding:12px 20px;display:grid;gap:16px}section{background:#fff;border:1px solid var(--line);border-radius:6px;padding:12px}
        table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
        th{font-weight:600;color:var(--mute);font-size:12px}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
        .badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;background:var(--line)}
        .s-active,.s-ready,.s-up{background:#dcfae6;color:var(--ok)}.s-failed,.s-quarantined,.s-not-ready,.s-down{background:#fee4e2;color:var(--bad)}
        .s-stopped,.s-stopping{background:#fef0c7;color:var(--warn)}.err{color:var(--bad);max-width:36em;word-break:break-word}
        .note{color:var(--warn);margin:4px 0}[hidden]{display:none!important}button{font:inherit;font-size:12px;margin-right:4px}
        #message{padding:8px 20px;background:#eff8ff}#message.error{background:#fee4e2}details summary{cursor:pointer}
        .scroll{max-height:60vh;overflow:auto}input{font:inherit}
        """#

    /// The page's script.
    static let script = #"""
        'use strict';
        // Plexus dashboard: polls the admin endpoint once a second; every string put into the DOM goes through esc().
        const POLL_MS = 1000;
        const SLOW_EVERY = 10; // polls between reads of /v1/health
        const RARE_EVERY = 30; // polls between reads of /metrics (1.8 MB with 1,000 topics) and raft-log's status
        const TOKEN_KEY = 'plexus.adminToken';
        const $ = (id) => document.getElementById(id);
        const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
        const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => ESC[c]);
        const num = (v) => (v === null || v === undefined ? '–' : Number(v).toLocaleString('en-US'));
        const rate = (v) => (v === null || v === undefined ? '–' : v >= 100 ? v.toFixed(0) : v.toFixed(1));
        const size = (v) => {
          if (v === null || v === undefined) return '–';
          const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
          let i = 0;
          while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
          return (i ? v.toFixed(1) : String(v)) + ' ' + units[i];
        };
        const ago = (t) => {
          const s = Math.max(0, Date.now() / 1000 - t);
          return s < 90 ? s.toFixed(0) + ' s ago' : s < 5400 ? (s / 60).toFixed(0) + ' min ago' : (s / 3600).toFixed(1) + ' h ago';
        };
        const state = { ticks: 0, groups: new Map(), metrics: null, published: new Map(), topicTotals: false, rendered: false };

        async function get(path, text) {
          try {
            const r = await fetch(path, { cache: 'no-store' });
            const body = text ? await r.text() : await r.json().catch(() => null);
            return { status: r.status, body };
          } catch (e) {
            return { status: 0, body: null, error: String(e) };
          }
        }

        function renderHeader(ready, health) {
          if (health && health.status === 200 && health.body) $('node').textContent = health.body.node;
          if (!ready) return;
          const s = $('status');
          if (ready.status === 0) {
            s.textContent = 'unreachable';
            s.className = 'badge s-down';
            return;
          }
          const b = ready.body || {};
          s.textContent = b.status || 'HTTP ' + ready.status;
          s.className = 'badge s-' + esc(b.status || 'down');
          $('reasons').textContent = (b.reasons || []).join('; ');
          if (b.node) $('node').textContent = b.node;
        }

        function actions(p) {
          const b = (a, label) => `<button data-action="${a}" data-plugin="${esc(p.name)}">${label || a}</button>`;
          let out = '';
          if (p.state === 'active') out += b('stop') + b('restart');
          if (p.state === 'quarantined') out += b('restart');
          if (p.state === 'stopped' || p.state === 'failed') out += b('start');
          if (p.state === 'active') out += b('upgrade', 'upgrade…');
          if (p.previousVersion) out += b('rollback', 'rollback to ' + esc(p.previousVersion));
          return out;
        }

        function renderPlugins(res) {
          $('plugins-note').hidden = res.status === 200;
          if (res.status !== 200) {
            $('plugins-note').textContent = 'plugins: GET /v1/plugins answered ' + (res.status || 'nothing');
            return;
          }
          const list = res.body || [];
          $('plugins-count').textContent = list.length + ' plugin(s), ' + list.filter((p) => p.state === 'active').length + ' active';
          $('plugins-body').innerHTML = list.map((p) => {
            const history = (p.history || []).slice(-8).reverse()
              .map((h) => `<li>${esc(h.state)} <span class="mute">${esc(ago(h.at))}</span></li>`).join('');
            const published = state.published.get(p.name);
            return `<tr data-plugin="${esc(p.name)}" data-state="${esc(p.state)}">`
              + `<td>${esc(p.name)}</td><td><span class="badge s-${esc(p.state)}">${esc(p.state)}</span></td>`
              + `<td>${esc(p.version)}${p.previousVersion ? ` <small>(was ${esc(p.previousVersion)})</small>` : ''}</td>`
              + `<td>${esc((p.kinds || []).join(', '))}</td><td>${esc(p.health ?? '–')}</td>`
              + `<td class="err">${p.lastError ? esc((p.errorCode ? '[' + p.errorCode + '] ' : '') + p.lastError) : ''}`
              + `${p.deployment ? `<div class="mute">${esc(p.deployment)}</div>` : ''}</td>`
              + `<td class="n">${published === undefined ? '–' : num(published)}</td>`
              + `<td><details><summary>${esc((p.history || []).length)} transitions</summary><ul>${history}</ul></details></td>`
              + `<td>${actions(p)}</td></tr>`;
          }).join('');
        }

        function renderTopics(res) {
          const note = $('topics-note');
          if (res.status !== 200) {
            note.hidden = false;
            note.textContent = res.status === 404
              ? 'topics: not available on this node (GET /v1/topics answered 404)'
              : 'topics: GET /v1/topics answered ' + (res.status || 'nothing') + ((res.body && res.body.error) ? ': ' + res.body.error : '');
            $('topics').hidden = true;
            return;
          }
          note.hidden = true;
          $('topics').hidden = false;
          const all = (res.body && res.body.topics) || [];
          const sum = (f) => all.reduce((n, t) => n + (Number(t[f]) || 0), 0);
          state.topicTotals = true;
          $('totals').textContent = num(sum('publishedTotal')) + ' events published since start; ' + rate(sum('publishRate'))
            + '/s in, ' + rate(sum('deliveredRate')) + '/s out (all topics, last 10 s)';
          const filter = $('topic-filter').value.trim();
          const shown = filter ? all.filter((t) => t.name.includes(filter)) : all;
          $('topics-count').textContent = all.length + ' topic(s)' + (filter ? ', ' + shown.length + ' shown' : '');
          $('topics-body').innerHTML = shown.map((t) => {
            const r = t.retention || {};
            const retention = [r.maxEvents != null ? num(r.maxEvents) + ' events' : '', r.maxBytes != null ? size(r.maxBytes) : '',
              r.maxAgeMs != null ? (r.maxAgeMs / 1000) + ' s' : ''].filter(Boolean).join(', ') || 'unlimited';
            return `<tr data-topic="${esc(t.name)}" data-rate="${esc(t.publishRate)}" data-next-offset="${esc(t.nextOffset)}"`
              + ` data-published="${esc(t.publishedTotal)}"><td>${esc(t.name)}</td><td>${esc(t.storage)}</td>`
              + `<td class="n rate">${rate(t.publishRate)}</td><td class="n">${rate(t.deliveredRate)}</td>`
              + `<td class="n">${num(t.events)}</td><td class="n">${size(t.bytes)}</td>`
              + `<td class="n">${num(t.firstOffset)}</td><td class="n offset">${num(t.nextOffset)}</td>`
              + `<td class="n">${num(t.groupCount ?? (t.groups || []).length)}</td><td>${esc(retention)}</td>`
              + `<td>${esc(t.leader ?? '')}</td></tr>`;
          }).join('');
        }

        function renderGroups(res) {
          const note = $('groups-note');
          if (res.status !== 200) {
            note.hidden = false;
            note.textContent = res.status === 404
              ? 'consumer groups: not available on this node (GET /v1/groups answered 404)'
              : 'consumer groups: GET /v1/groups answered ' + (res.status || 'nothing');
            $('groups').hidden = true;
            return;
          }
          note.hidden = true;
          $('groups').hidden = false;
          const now = performance.now();
          const groups = (res.body && res.body.groups) || [];
          $('groups-count').textContent = groups.length + ' group(s)';
          const next = new Map();
          $('groups-body').innerHTML = groups.map((g) => {
            const key = g.topic + '\u0000' + g.group;
            const before = state.groups.get(key);
            let acks = null;
            if (before && g.committed != null && before.committed != null && now > before.at) {
              acks = Math.max(0, (g.committed - before.committed) * 1000 / (now - before.at));
            }
            next.set(key, { committed: g.committed, at: now });
            return `<tr data-group="${esc(g.topic + '/' + g.group)}" data-lag="${esc(g.lag)}">`
              + `<td>${esc(g.topic)}</td><td>${esc(g.group)}</td><td class="n">${num(g.members)}</td>`
              + `<td class="n">${num(g.committed)}</td><td class="n">${num(g.lag)}</td><td class="n">${rate(acks)}</td>`
              + `<td class="n">${num(g.inFlight)}</td><td class="n">${num(g.redeliveries)}</td>`
              + `<td class="n">${num(g.deadLettered)}</td></tr>`;
          }).join('');
          state.groups = next;
        }

        // Node-wide totals from the Prometheus text: published and delivered events, and each plugin's publishes.
        function renderMetrics(res) {
          if (res.status !== 200 || typeof res.body !== 'string') return;
          let published = 0, delivered = 0;
          const plugins = new Map();
          for (const line of res.body.split('\n')) {
            if (line.startsWith('plexus_events_published_total')) published += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
            else if (line.startsWith('plexus_events_delivered_total')) delivered += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
            else if (line.startsWith('plexus_plugin_events_published_total{')) {
              const m = /plugin="([^"]*)"\}\s+(\S+)/.exec(line);
              if (m) plugins.set(m[1], Number(m[2]));
            }
          }
          const now = performance.now();
          const before = state.metrics;
          state.metrics = { published, delivered, at: now };
          state.published = plugins;
          if (state.topicTotals) return;
          let text = num(published) + ' events published, ' + num(delivered) + ' delivered since start';
          if (before && now > before.at) {
            const dt = (now - before.at) / 1000;
            text += ` (${rate((published - before.published) / dt)}/s in, ${rate((delivered - before.delivered) / dt)}/s out)`;
          }
          $('totals').textContent = text;
        }

        // Cluster members from raft-log's `status` operation, when the node runs raft-log with more than one member.
        async function renderCluster(plugins) {
          const raft = (plugins.body || []).find((p) => p.name === 'raft-log' && p.state === 'active');
          if (!raft || !(raft.operations || []).some((o) => o.name === 'status')) { $('cluster').hidden = true; return; }
          const res = await send('/v1/plugins/raft-log/operations/status', '{"args":[]}', false);
          if (res.status === 401) {
            $('cluster').hidden = false;
            $('cluster-note').textContent = 'cluster: reading raft-log status needs the admin token (press an action once to give it)';
            return;
          }
          let status = null;
          try { status = JSON.parse(res.body.result); } catch (e) { status = null; }
          if (!status || !Array.isArray(status.streams)) { $('cluster').hidden = true; return; }
          const nodes = new Map();
          const node = (id) => {
            if (!nodes.has(id)) nodes.set(id, { id, voter: 0, learner: 0, leads: 0, lag: null, active: null });
            return nodes.get(id);
          };
          node(status.node);
          for (const s of status.streams) {
            (s.voters || []).forEach((v) => node(v).voter++);
            (s.learners || []).forEach((v) => node(v).learner++);
            if (s.leader) node(s.leader).leads++;
            for (const p of s.peers || []) {
              const n = node(p.id);
              n.lag = Math.max(n.lag ?? 0, p.lag);
              n.active = (n.active ?? true) && p.active;
            }
          }
          if (nodes.size < 2) { $('cluster').hidden = true; return; }
          $('cluster').hidden = false;
          $('cluster-note').textContent = 'seen from ' + status.node + ' (raft-log status, ' + status.streams.length + ' stream(s), '
            + num(status.leaderChanges) + ' leader change(s))';
          $('cluster-body').innerHTML = [...nodes.values()].sort((a, b) => a.id.localeCompare(b.id)).map((n) =>
            `<tr data-node="${esc(n.id)}"><td>${esc(n.id)}${n.id === status.node ? ' <small>(this node)</small>' : ''}</td>`
            + `<td class="n">${num(n.leads)}</td><td class="n">${num(n.voter)}</td><td class="n">${num(n.learner)}</td>`
            + `<td>${n.active === null ? '–' : n.active ? 'connected' : 'unreachable'}</td><td class="n">${num(n.lag)}</td></tr>`
          ).join('');
        }

        async function send(path, body, interactive) {
          for (let attempt = 0; attempt < 3; attempt++) {
            const headers = { 'Content-Type': 'application/json' };
            const token = sessionStorage.getItem(TOKEN_KEY);
            if (token) headers.Authorization = 'Bearer ' + token;
            let r;
            try {
              r = await fetch(path, { method: 'POST', headers, body, cache: 'no-store' });
            } catch (e) {
              return { status: 0, body: { error: String(e) } };
            }
            const text = await r.text();
            let parsed = null;
            try { parsed = JSON.parse(text); } catch (e) { parsed = { error: text }; }
            if (r.status !== 401 || !interactive) return { status: r.status, body: parsed };
            const given = prompt('This node requires its admin token (admin.token) for actions. Token:');
            if (!given) return { status: 401, body: parsed };
            sessionStorage.setItem(TOKEN_KEY, given.trim());
          }
          return { status: 401, body: { error: 'the admin token was refused' } };
        }

        function show(text, isError) {
          const m = $('message');
          m.hidden = false;
          m.className = isError ? 'error' : '';
          m.textContent = text;
        }

        async function act(action, plugin) {
          let body = '';
          if (action === 'upgrade') {
            const manifest = prompt(`Upgrade ${plugin}: the new manifest's absolute path on the node's machine`);
            if (!manifest) return;
            body = JSON.stringify({ manifest });
          } else if (!confirm(`${action} plugin ${plugin}?`)) {
            return;
          }
          show(`${action} ${plugin}…`, false);
          const res = await send(`/v1/plugins/${encodeURIComponent(plugin)}/${action}`, body, true);
          const changes = (res.body && res.body.changes) || [];
          if (res.status === 200) show(changes.map((c) => `${c.action} ${c.plugin}: ${c.message}`).join('; ') || 'done', false);
          else show(`${action} ${plugin}: HTTP ${res.status}: ` + ((res.body && (res.body.error || changes.map((c) => c.message).join('; '))) || ''), true);
          tick();
        }

        async function tick() {
          const slow = state.ticks % SLOW_EVERY === 0;
          const rare = state.ticks % RARE_EVERY === 0;
          state.ticks++;
          // Not waited for: the tables do not wait for the slower, rarer requests.
          if (slow) get('/v1/health').then((health) => renderHeader(null, health));
          if (rare) get('/metrics', true).then(renderMetrics);
          let plugins = null;
          await Promise.all([
            get('/v1/ready').then((ready) => renderHeader(ready, null)),
            get('/v1/plugins').then((res) => { plugins = res; renderPlugins(res); }),
            get('/v1/topics').then(renderTopics),
            get('/v1/groups').then(renderGroups),
          ]);
          if (rare && plugins.status === 200) renderCluster(plugins);
          $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
          if (!state.rendered) {
            state.rendered = true;
            // The time from navigation to the first frame painted with every table filled (make bench-admin).
            requestAnimationFrame(() => setTimeout(() => { document.body.dataset.firstRender = performance.now().toFixed(1); }, 0));
          }
        }

        document.addEventListener('click', (e) => {
          const button = e.target.closest('button[data-action]');
          if (button) act(button.dataset.action, button.dataset.plugin);
        });
        $('topic-filter').addEventListener('input', () => tick());
        tick();
        setInterval(tick, POLL_MS);
        """#

    /// The page's markup between `<body>` and the script.
    static let body = #"""
        <header><h1>Plexus node <span id="node">…</span></h1><span id="status" class="badge">connecting</span>
        <span id="reasons" class="err"></span><small id="updated"></small></header>
        <div id="message" hidden></div>
        <main>
        <section><h2>Plugins <small id="plugins-count"></small></h2><p id="plugins-note" class="note" hidden></p>
        <div class="scroll"><table id="plugins"><thead><tr><th>name</th><th>state</th><th>version</th><th>kinds</th>
        <th>health</th><th>last error</th><th class="n">published</th><th>history</th><th>actions</th></tr></thead>
        <tbody id="plugins-body"></tbody></table></div><p class="mute" id="totals"></p></section>
        <section><h2>Topics <small id="topics-count"></small> <input id="topic-filter" placeholder="filter topics"></h2>
        <p id="topics-note" class="note" hidden></p>
        <div class="scroll"><table id="topics"><thead><tr><th>topic</th><th>storage</th><th class="n">published/s</th>
        <th class="n">delivered/s</th><th class="n">events</th><th class="n">size</th><th class="n">first offset</th>
        <th class="n">next offset</th><th class="n">groups</th><th>retention</th><th>leader</th></tr></thead>
        <tbody id="topics-body"></tbody></table></div></section>
        <section><h2>Consumer groups <small id="groups-count"></small></h2><p id="groups-note" class="note" hidden></p>
        <div class="scroll"><table id="groups"><thead><tr><th>topic</th><th>group</th><th class="n">members</th>
        <th class="n">committed</th><th class="n">lag</th><th class="n">acked/s</th><th class="n">in flight</th>
        <th class="n">redeliveries</th><th class="n">dead-lettered</th></tr></thead>
        <tbody id="groups-body"></tbody></table></div></section>
        <section id="cluster" hidden><h2>Cluster</h2><p id="cluster-note" class="mute"></p>
        <table><thead><tr><th>node</th><th class="n">leads streams</th><th class="n">voter in</th><th class="n">learner in</th>
        <th>link</th><th class="n">max lag</th></tr></thead><tbody id="cluster-body"></tbody></table></section>
        </main>
        """#

    /// The whole page.
    public static let page =
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        + "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Plexus node</title>"
        + "<link rel=\"icon\" href=\"data:,\"><style>" + style + "</style></head>\n<body>\n" + body
        + "\n<script>" + script + "</script>\n</body></html>\n"

    /// Response headers of the page: revalidate on every load (a new node binary may serve another page), and
    /// run nothing but the page's own script and style.
    static let headers: [(String, String)] = [
        ("Cache-Control", "no-cache"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        (
            "Content-Security-Policy",
            "default-src 'none'; script-src '\(hash(script))'; style-src '\(hash(style))'; connect-src 'self'; "
                + "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
    ]

    /// A CSP source for inline text: `sha256-<base64>`.
    static func hash(_ text: String) -> String {
        "sha256-" + Data(SHA256.hash(data: Data(text.utf8))).base64EncodedString()
    }
}
