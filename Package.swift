// swift-tools-version: 6.1
import PackageDescription

// The manifest is split into typed pieces: one big literal is too much for the type checker.

/// Settings every Sluice target shares: Swift 6 language mode (strict concurrency)
/// and explicit existentials.
let sluiceSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

func product(_ name: String, _ package: String) -> Target.Dependency {
    .product(name: name, package: package)
}

let nio: [Target.Dependency] = [product("NIOCore", "swift-nio"), product("NIOPosix", "swift-nio")]
let logging: Target.Dependency = product("Logging", "swift-log")
let metrics: Target.Dependency = product("Metrics", "swift-metrics")
let lifecycle: Target.Dependency = product("ServiceLifecycle", "swift-service-lifecycle")

let dependencies: [Package.Dependency] = [
    .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
    .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
    .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
    .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
]

// MARK: Plugins (one folder per config-selectable component)

/// Every plugin: module name, folder under plugins/, and what it needs beyond SluiceCore and NIO.
/// A plugin never depends on another plugin.
let plugins: [(name: String, folder: String, dependencies: [Target.Dependency])] = [
    ("ReceiverTCP", "receiver-tcp", [logging, lifecycle]),
    ("ReceiverHTTP", "receiver-http", [
        product("Hummingbird", "hummingbird"), product("HummingbirdCore", "hummingbird"),
        product("HTTPTypes", "swift-http-types"), product("NIOHTTPTypes", "swift-nio-extras"),
        product("NIOHTTPTypesHTTP1", "swift-nio-extras"), product("NIOHTTP1", "swift-nio"),
        logging, lifecycle,
    ]),
    ("StageCompress", "stage-compress", []),
    ("StageDecompress", "stage-decompress", []),
    ("StageHash", "stage-hash", []),
    ("StageRateLimit", "stage-rate-limit", []),
    ("SinkDisk", "sink-disk", [logging]),
    ("SinkRotate", "sink-rotate", ["CZlib", logging]),
    ("SinkSpool", "sink-spool", [product("_NIOFileSystem", "swift-nio"), logging]),
    ("SinkTee", "sink-tee", [product("DequeModule", "swift-collections"), logging]),
    ("ReceiverSpool", "receiver-spool", [product("_NIOFileSystem", "swift-nio"), logging, metrics, lifecycle]),
    ("SinkS3", "sink-s3", [
        product("AsyncHTTPClient", "async-http-client"), product("Crypto", "swift-crypto"),
        product("DequeModule", "swift-collections"), product("NIOHTTP1", "swift-nio"), logging,
    ]),
]

let pluginTargets: [Target] = plugins.map { plugin in
    Target.target(
        name: plugin.name,
        dependencies: ["SluiceCore"] + nio + plugin.dependencies,
        path: "plugins/\(plugin.folder)",
        exclude: ["README.md"],
        swiftSettings: sluiceSettings
    )
}

// MARK: Core (not selectable from config)

let coreTargets: [Target] = [
    .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
    // Linux calls Swift's Glibc module leaves out (splice, pipe sizes).
    .target(name: "CLinux", path: "Sources/CLinux"),
    .target(
        name: "SluiceCore",
        dependencies: nio + [
            "CZlib", "CLinux", product("_NIOFileSystem", "swift-nio"), logging, metrics,
            product("Crypto", "swift-crypto"), lifecycle, product("Yams", "Yams"),
            product("DequeModule", "swift-collections"), product("NIOSSL", "swift-nio-ssl"), product("NIOTLS", "swift-nio"),
        ],
        swiftSettings: sluiceSettings
    ),
    .target(name: "SluiceTestKit", dependencies: ["SluiceCore"] + nio, swiftSettings: sluiceSettings),
    // The load generator behind `sluice load` (a library so its logic is testable).
    .target(name: "SluiceLoad", dependencies: ["SluiceCore"] + nio + [product("NIOSSL", "swift-nio-ssl"), product("NIOTLS", "swift-nio")], swiftSettings: sluiceSettings),
    .target(
        name: "SluiceRuntime",
        // The one registration list (BuiltinPlugins.swift) imports every plugin.
        dependencies: ["SluiceCore"] + nio + plugins.map { Target.Dependency(stringLiteral: $0.name) } + [
            product("Hummingbird", "hummingbird"), product("HummingbirdTLS", "hummingbird"), product("Prometheus", "swift-prometheus"),
            logging, metrics, lifecycle, product("UnixSignals", "swift-service-lifecycle"),
        ],
        swiftSettings: sluiceSettings
    ),
    .executableTarget(
        name: "sluice",
        dependencies: ["SluiceCore", "SluiceRuntime", "SluiceLoad"] + nio + [
            product("ArgumentParser", "swift-argument-parser"), logging, metrics,
            product("Prometheus", "swift-prometheus"), product("NIOHTTP1", "swift-nio"),
            product("_NIOFileSystem", "swift-nio"), product("NIOSSL", "swift-nio-ssl"), lifecycle,
        ],
        swiftSettings: sluiceSettings
    ),
]

// MARK: Examples and benchmarks (built with everything, so they cannot rot)

let exampleTargets: [Target] = [
    .executableTarget(
        name: "sluice-library-example",
        dependencies: ["SluiceCore", "SluiceRuntime", "SinkDisk", "StageHash", logging] + nio,
        path: "examples/library",
        swiftSettings: sluiceSettings
    ),
    .executableTarget(
        name: "stages-bench",
        dependencies: ["SluiceCore", "StageCompress", "StageDecompress", "StageHash", "StageRateLimit", logging] + nio,
        path: "bench/stages-bench",
        swiftSettings: sluiceSettings
    ),
    .executableTarget(
        name: "s3-bench",
        dependencies: ["SinkS3", "SluiceCore", logging] + nio,
        path: "bench/s3-bench",
        swiftSettings: sluiceSettings
    ),
]

// MARK: Tests (one folder per module)

/// Test target name and its dependencies beyond SluiceCore, SluiceTestKit and NIO.
let tests: [(name: String, dependencies: [Target.Dependency])] = [
    ("SluiceCoreTests", []),
    ("SluiceRuntimeTests", ["SluiceRuntime", logging]),
    ("ReceiverTCPTests", ["ReceiverTCP", "SluiceRuntime", logging, product("NIOEmbedded", "swift-nio")]),
    ("ReceiverHTTPTests", ["ReceiverHTTP", "SluiceRuntime", metrics, product("Prometheus", "swift-prometheus"), product("HTTPTypes", "swift-http-types")]),
    ("StageCompressTests", ["StageCompress", "StageDecompress", "SluiceRuntime"]),
    ("StageDecompressTests", ["StageDecompress", "StageCompress", "SluiceRuntime"]),
    ("StageHashTests", ["StageHash", "StageCompress", "SluiceRuntime"]),
    ("StageRateLimitTests", ["StageRateLimit", "SluiceRuntime"]),
    ("SinkDiskTests", ["SinkDisk"]),
    ("SinkS3Tests", ["SinkS3"]),
    ("SluiceLoadTests", ["SluiceLoad"]),
    ("SinkRotateTests", ["SinkRotate"]),
    ("SinkSpoolTests", ["SinkSpool"]),
    ("ReceiverSpoolTests", ["ReceiverSpool", "SinkSpool", "SluiceRuntime", lifecycle]),
    ("SinkTeeTests", ["SinkTee", "SinkSpool", "SinkRotate"]),
]

let testTargets: [Target] = tests.map { test in
    Target.testTarget(
        name: test.name,
        dependencies: ["SluiceCore", "SluiceTestKit"] + nio + test.dependencies,
        swiftSettings: sluiceSettings
    )
}

let package = Package(
    name: "sluice",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "sluice", targets: ["sluice"]),
        .library(name: "SluiceCore", targets: ["SluiceCore"]),
        .library(name: "SluiceRuntime", targets: ["SluiceRuntime"]),
        .library(name: "SluiceTestKit", targets: ["SluiceTestKit"]),
    ],
    dependencies: dependencies,
    targets: coreTargets + pluginTargets + exampleTargets + testTargets
)
