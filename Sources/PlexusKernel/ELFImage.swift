import Foundation

/// Checks that a file is a whole shared object for this machine before `dlopen` maps it.
///
/// `dlopen` trusts the program headers: a segment that reaches past the end of a truncated file is mapped
/// anyway, and the first touch of its missing pages raises SIGBUS in the loader, killing the node (a
/// half-copied `.so` in a drop-in directory is exactly such a file). This check reads the ELF header and
/// program headers with `pread` and refuses, with the reason, anything the loader could not map whole:
/// not ELF, another class, byte order or machine, not a shared object, program headers outside the file,
/// or a `PT_LOAD`/`PT_DYNAMIC` whose file range is not inside the file.
///
/// The kernel checks the content-addressed copy it is about to map (which only it writes), so the bytes
/// checked are the bytes mapped.
enum ELFImage {
    /// `EM_*` of the machine this kernel runs on.
    static var hostMachine: UInt16 {
        #if arch(x86_64)
            return 62  // EM_X86_64
        #elseif arch(arm64)
            return 183  // EM_AARCH64
        #else
            return 0
        #endif
    }

    /// Throws `KernelError(.loadFailed)` naming what is wrong when `path` is not a loadable shared object.
    static func check(_ path: String, subject: String) throws {
        func refuse(_ reason: String) -> KernelError {
            KernelError(
                .loadFailed, subject: subject, field: "library", "\(path) is not a loadable plugin image: \(reason)")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw refuse("cannot be opened (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw refuse("cannot be examined (\(String(cString: strerror(errno))))") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw refuse("not a regular file") }
        let fileSize = UInt64(info.st_size)

        func read(_ count: Int, at offset: UInt64) throws -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: count)
            var done = 0
            while done < count {
                let n = bytes.withUnsafeMutableBytes { buffer in
                    pread(fd, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw refuse("cannot read \(count) bytes at offset \(offset)") }
                done += n
            }
            return bytes
        }

        guard fileSize >= 64 else { throw refuse("\(fileSize) bytes is shorter than an ELF header (64)") }
        let header = try read(64, at: 0)
        guard header[0] == 0x7F, header[1] == 0x45, header[2] == 0x4C, header[3] == 0x46 else {
            throw refuse("no ELF magic number (not a shared library)")
        }
        guard header[4] == 2 else { throw refuse("ELF class \(header[4]) is not 64-bit (ELFCLASS64)") }
        guard header[5] == 1 else { throw refuse("not little-endian (ELFDATA2LSB)") }
        let type = header.u16(16)
        guard type == 3 else { throw refuse("ELF type \(type) is not a shared object (ET_DYN)") }
        let machine = header.u16(18)
        guard machine == hostMachine else {
            throw refuse("built for ELF machine \(machine), but this node is machine \(hostMachine)")
        }
        let phoff = header.u64(32)
        let phentsize = UInt64(header.u16(54))
        let phnum = UInt64(header.u16(56))
        guard phentsize == 56 else { throw refuse("program header size \(phentsize) is not 56") }
        guard phnum > 0 else { throw refuse("no program headers") }
        let (tableEnd, overflow) = phoff.addingReportingOverflow(phentsize * phnum)
        guard !overflow, tableEnd <= fileSize else {
            throw refuse(
                "the program headers end at byte \(overflow ? "beyond 2^64" : String(tableEnd)), past the end of the \(fileSize)-byte file (truncated?)"
            )
        }
        let table = try read(Int(phentsize * phnum), at: phoff)
        var loads = 0
        for index in 0..<Int(phnum) {
            let entry = Array(table[(index * 56)..<(index * 56 + 56)])
            let kind = entry.u32(0)
            guard kind == 1 || kind == 2 else { continue }  // PT_LOAD, PT_DYNAMIC
            let offset = entry.u64(8)
            let fileBytes = entry.u64(32)
            let memoryBytes = entry.u64(40)
            let name = kind == 1 ? "PT_LOAD" : "PT_DYNAMIC"
            let (end, overflow) = offset.addingReportingOverflow(fileBytes)
            guard !overflow, end <= fileSize else {
                throw refuse(
                    "program header \(index) (\(name)) covers bytes \(offset)..<\(overflow ? "2^64" : String(end)), past the end of the \(fileSize)-byte file (truncated or still being written?)"
                )
            }
            if kind == 1 {
                guard fileBytes <= memoryBytes else {
                    throw refuse("program header \(index) (PT_LOAD) has more file bytes than memory bytes")
                }
                loads += 1
            }
        }
        guard loads > 0 else { throw refuse("no loadable segment (PT_LOAD)") }
    }
}

extension [UInt8] {
    fileprivate func u16(_ at: Int) -> UInt16 { UInt16(self[at]) | UInt16(self[at + 1]) << 8 }
    fileprivate func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(self[at + $1]) << (8 * $1) } }
    fileprivate func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(self[at + $1]) << (8 * $1) } }
}
