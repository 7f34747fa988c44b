/// ISO-8601 durations (`PT0.5S`, `PT2M`, `P1DT1H`), as Knative writes `backoffDelay` and `timeout`.
public enum ISO8601Duration {
    /// The duration in nanoseconds, or `nil` when `text` is not a duration of weeks, days, hours, minutes and
    /// seconds (years and months have no fixed length and are refused).
    public static func nanoseconds(_ text: String) -> UInt64? {
        var rest = Substring(text.uppercased())
        guard rest.hasPrefix("P") else { return nil }
        rest = rest.dropFirst()
        var inTime = false
        var total: Double = 0
        var number = ""
        var sawComponent = false
        for c in rest {
            if c == "T" {
                guard !inTime, number.isEmpty else { return nil }
                inTime = true
                continue
            }
            if c.isASCII && (c.isNumber || c == "." || c == ",") {
                number.append(c == "," ? "." : c)
                continue
            }
            guard let value = Double(number), value >= 0 else { return nil }
            number = ""
            sawComponent = true
            switch (inTime, c) {
            case (false, "W"): total += value * 7 * 86_400
            case (false, "D"): total += value * 86_400
            case (true, "H"): total += value * 3_600
            case (true, "M"): total += value * 60
            case (true, "S"): total += value
            default: return nil
            }
        }
        guard number.isEmpty, sawComponent, total * 1e9 < Double(UInt64.max) else { return nil }
        return UInt64((total * 1e9).rounded())
    }

    /// Writes milliseconds as a duration in seconds: 500 → `PT0.5S`, 60000 → `PT60S`.
    public static func format(milliseconds ms: UInt64) -> String {
        let seconds = ms / 1000
        let fraction = ms % 1000
        guard fraction > 0 else { return "PT\(seconds)S" }
        var digits = String(fraction)
        digits = String(repeating: "0", count: 3 - digits.count) + digits
        while digits.hasSuffix("0") { digits.removeLast() }
        return "PT\(seconds).\(digits)S"
    }
}
