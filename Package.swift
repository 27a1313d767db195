// swift-tools-version: 6.1
import PackageDescription

/// Settings every Sluice target shares: Swift 6 language mode (strict concurrency)
/// and explicit existentials.
let sluiceSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let nio: [Target.Dependency] = [
    .product(name: "NIOCore", package: "swift-nio"),
    .product(name: "NIOPosix", package: "swift-nio"),
]

let package = Package(
    name: "sluice",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "sluice", targets: ["sluice"]),
        .library(name: "SluiceCore", targets: ["SluiceCore"]),
        .library(name: "SluiceRuntime", targets: ["SluiceRuntime"]),
        .library(name: "SluiceTestKit", targets: ["SluiceTestKit"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
    ],
    targets: [
        // MARK: Core (not selectable from config)
        .systemLibrary(
            name: "CZlib",
            path: "Sources/CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .target(
            name: "SluiceCore",
            dependencies: nio + [
                "CZlib",
                .product(name: "_NIOFileSystem", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: sluiceSettings
        ),
        .target(
            name: "SluiceTestKit",
            dependencies: ["SluiceCore"] + nio,
            swiftSettings: sluiceSettings
        ),
        .target(
            name: "SluiceRuntime",
            dependencies: nio + [
                "SluiceCore",
                // The one registration list (BuiltinPlugins.swift) imports every plugin.
                // PLUGINS-BEGIN
                "ReceiverSpool",
                "ReceiverTCP",
                "SinkDisk",
                "SinkRotate",
                "SinkSpool",
                "SinkTee",
                "StageCompress",
                "StageDecompress",
                "StageHash",
                "StageRateLimit",
                // PLUGINS-END
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: sluiceSettings
        ),
        .executableTarget(
            name: "sluice",
            dependencies: nio + [
                "SluiceCore",
                "SluiceRuntime",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: sluiceSettings
        ),

        // MARK: Plugins (one folder per config-selectable component)
        .target(
            name: "ReceiverSpool",
            dependencies: nio + [
                "SluiceCore",
                .product(name: "_NIOFileSystem", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "plugins/receiver-spool",
            exclude: ["README.md"],
            swiftSettings: sluiceSettings
        ),
        .target(
            name: "ReceiverTCP",
            dependencies: nio + [
                "SluiceCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "plugins/receiver-tcp",
            exclude: ["README.md"],
            swiftSettings: sluiceSettings
        ),
        .target(
            name: "SinkRotate",
            dependencies: nio + [
                "SluiceCore",
                "CZlib",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "plugins/sink-rotate",
            exclude: ["README.md"],
            swiftSettings: sluiceSettings
        ),
        .target(
            name: "SinkSpool",
            dependencies: nio + [
                "SluiceCore",
                .product(name: "_NIOFileSystem", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "plugins/sink-spool",
            exclude: ["README.md"],
            swiftSettings: sluiceSettings
        ),
        .target(
            name: "SinkTee",
            dependencies: nio + [
                "SluiceCore",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "plugins/sink-tee",
            exclude: ["README.md"],
            swiftSettings: sluiceSettings
        ),
        .target(
            name: "SinkDisk",
            dependencies: nio + [
                "SluiceCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "plugins/sink-disk",
            exclude: ["README.md"],
            swiftSettings: sluiceSettings
        ),
        .target(name: "StageCompress", dependencies: ["SluiceCore", .product(name: "NIOCore", package: "swift-nio")], path: "plugins/stage-compress", exclude: ["README.md"], swiftSettings: sluiceSettings),
        .target(name: "StageDecompress", dependencies: ["SluiceCore", .product(name: "NIOCore", package: "swift-nio")], path: "plugins/stage-decompress", exclude: ["README.md"], swiftSettings: sluiceSettings),
        .target(name: "StageHash", dependencies: ["SluiceCore", .product(name: "NIOCore", package: "swift-nio")], path: "plugins/stage-hash", exclude: ["README.md"], swiftSettings: sluiceSettings),
        .target(name: "StageRateLimit", dependencies: ["SluiceCore", .product(name: "NIOCore", package: "swift-nio")], path: "plugins/stage-rate-limit", exclude: ["README.md"], swiftSettings: sluiceSettings),

        // MARK: Examples
        .executableTarget(
            name: "sluice-library-example",
            dependencies: nio + [
                "SluiceCore", "SluiceRuntime", "SinkDisk", "StageHash",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "examples/library",
            swiftSettings: sluiceSettings
        ),

        // MARK: Benchmarks
        .executableTarget(
            name: "stages-bench",
            dependencies: [
                "SluiceCore", "StageCompress", "StageDecompress", "StageHash", "StageRateLimit",
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
            ],
            path: "bench/stages-bench",
            swiftSettings: sluiceSettings
        ),

        // MARK: Tests
        .testTarget(
            name: "StageCompressTests",
            dependencies: ["StageCompress", "StageDecompress", "SluiceCore", "SluiceTestKit", "SluiceRuntime"] + nio,
            swiftSettings: sluiceSettings
        ),
        .testTarget(
            name: "StageDecompressTests",
            dependencies: ["StageDecompress", "StageCompress", "SluiceCore", "SluiceTestKit", "SluiceRuntime"] + nio,
            swiftSettings: sluiceSettings
        ),
        .testTarget(
            name: "StageHashTests",
            dependencies: ["StageHash", "StageCompress", "SluiceCore", "SluiceTestKit", "SluiceRuntime"] + nio,
            swiftSettings: sluiceSettings
        ),
        .testTarget(
            name: "StageRateLimitTests",
            dependencies: ["StageRateLimit", "SluiceCore", "SluiceTestKit", "SluiceRuntime"] + nio,
            swiftSettings: sluiceSettings
        ),
        .testTarget(
            name: "SluiceCoreTests",
            dependencies: ["SluiceCore", "SluiceTestKit"] + nio,
            swiftSettings: sluiceSettings
        ),
        .testTarget(
            name: "SinkRotateTests",
            dependencies: ["SinkRotate", "SluiceCore", "SluiceTestKit"] + nio,
            swiftSettings: sluiceSettings
        ),
        .testTarget(
            name: "SinkSpoolTests",
            dependencies: ["SinkSpool", "SluiceCore", "SluiceTestKit"] + nio,
            swiftSettings: sluiceSettings
        ),
        .testTarget(
            name: "ReceiverSpoolTests",
            dependencies: ["ReceiverSpool", "SinkSpool", "SluiceCore", "SluiceRuntime", "SluiceTestKit"] + nio + [
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: sluiceSettings
        ),
        .testTarget(
            name: "SinkTeeTests",
            dependencies: ["SinkTee", "SinkSpool", "SinkRotate", "SluiceCore", "SluiceTestKit"] + nio,
            swiftSettings: sluiceSettings
        ),
        .testTarget(
            name: "SluiceRuntimeTests",
            dependencies: ["SluiceCore", "SluiceRuntime", "SluiceTestKit", .product(name: "Logging", package: "swift-log")] + nio,
            swiftSettings: sluiceSettings
        ),
        .testTarget(
            name: "SinkDiskTests",
            dependencies: ["SinkDisk", "SluiceCore", "SluiceTestKit"] + nio,
            swiftSettings: sluiceSettings
        ),
        .testTarget(
            name: "ReceiverTCPTests",
            dependencies: ["ReceiverTCP", "SluiceCore", "SluiceRuntime", "SluiceTestKit"] + nio + [
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: sluiceSettings
        ),
    ]
)
