#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import Synchronization

/// The file descriptor of a connected NIO socket channel, for splicing from it.
///
/// SwiftNIO does not publish the descriptor of a channel it accepted, so it is read
/// through reflection (`BaseSocketChannel.socket` → `BaseSocket.descriptor`, as in
/// swift-nio 2.101) and then checked: the descriptor must be a socket whose local and
/// peer addresses are the channel's. Should a future NIO store it differently, or the
/// check fail, the answer is `nil` and the caller reads the usual way; a test
/// (`ReceiverTCPTests`) notices that splicing stopped.
///
/// Call it on the channel's event loop while the channel is open: NIO changes the
/// descriptor only there, when it closes the socket.
public enum ChannelDescriptor {
    public static func of(_ channel: any Channel) -> CInt? {
        guard channel.isActive,
              let local = channel.localAddress, let remote = channel.remoteAddress,
              let socket = storedProperty("socket", of: channel),
              let fd = storedProperty("descriptor", of: socket) as? CInt, fd >= 0
        else { return nil }
        guard matches(fd, local, getsockname), matches(fd, remote, getpeername) else { return nil }
        return fd
    }

    /// The value of the stored property `label` of `object` or of one of its superclasses.
    ///
    /// Where the property is (how many superclasses up, which child) is remembered per
    /// class: listing every child of NIO's channel classes costs ~30 µs, one child ~1 µs.
    private static func storedProperty(_ label: String, of object: Any) -> Any? {
        let key = PropertyKey(type: ObjectIdentifier(type(of: object)), label: label)
        if let place = places.withLock({ $0[key] }) {
            var mirror = Mirror(reflecting: object)
            for _ in 0..<place.depth {
                guard let parent = mirror.superclassMirror else { return nil }
                mirror = parent
            }
            let children = mirror.children
            guard place.index < children.count else { return nil }
            let child = children[children.index(children.startIndex, offsetBy: place.index)]
            return child.label == label ? child.value : nil
        }
        var mirror: Mirror? = Mirror(reflecting: object)
        var depth = 0
        while let current = mirror {
            if let index = current.children.firstIndex(where: { $0.label == label }) {
                let place = PropertyPlace(depth: depth, index: current.children.distance(from: current.children.startIndex, to: index))
                places.withLock { $0[key] = place }
                return current.children[index].value
            }
            mirror = current.superclassMirror
            depth += 1
        }
        return nil
    }

    private struct PropertyKey: Hashable {
        var type: ObjectIdentifier
        var label: String
    }
    private struct PropertyPlace {
        var depth: Int
        var index: Int
    }
    private static let places = Mutex<[PropertyKey: PropertyPlace]>([:])

    /// Whether `call` (`getsockname` or `getpeername`) on `fd` gives `address`.
    private static func matches(
        _ fd: CInt, _ address: SocketAddress,
        _ call: (CInt, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> CInt
    ) -> Bool {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(fd, $0, &length) }
        }
        guard result == 0 else { return false }
        switch address {
        case .v4(let v4):
            guard Int32(storage.ss_family) == AF_INET else { return false }
            let found = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in.self) }
            return found.sin_port == v4.address.sin_port && found.sin_addr.s_addr == v4.address.sin_addr.s_addr
        case .v6(let v6):
            guard Int32(storage.ss_family) == AF_INET6 else { return false }
            let found = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in6.self) }
            var expected = v6.address
            return found.sin6_port == expected.sin6_port
                && withUnsafeBytes(of: found.sin6_addr) { a in withUnsafeBytes(of: &expected.sin6_addr) { a.elementsEqual($0) } }
        case .unixDomainSocket:
            return false
        }
    }
}
