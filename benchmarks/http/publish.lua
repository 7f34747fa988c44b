-- wrk script: POSTs one 1 KiB CloudEvent in binary mode per request, the same bytes every time, so that
-- wrk takes its fast path (a prebuilt request). Used against Plexus and against nginx alike.
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["ce-specversion"] = "1.0"
wrk.headers["ce-id"] = "bench-1"
wrk.headers["ce-source"] = "/bench/wrk"
wrk.headers["ce-type"] = "com.example.bench"
wrk.headers["Content-Type"] = "application/octet-stream"
