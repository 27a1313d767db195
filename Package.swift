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
                "ReceiverTCP",
                "SinkDisk",
                // PLUGINS-END
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: sluiceSettings
        ),
        .target(
            name: "SluiceLoad",
            dependencies: nio + ["SluiceCore"],
            swiftSettings: sluiceSettings
        ),
        .executableTarget(
            name: "sluice",
            dependencies: nio + [
                "SluiceCore",
                "SluiceRuntime",
                "SluiceLoad",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: sluiceSettings
        ),

        // MARK: Plugins (one folder per config-selectable component)
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
            name: "SinkDisk",
            dependencies: nio + [
                "SluiceCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "plugins/sink-disk",
            exclude: ["README.md"],
            swiftSettings: sluiceSettings
        ),

        // MARK: Tests
        .testTarget(
            name: "SluiceCoreTests",
            dependencies: ["SluiceCore", "SluiceTestKit"] + nio,
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
        .testTarget(
            name: "SluiceLoadTests",
            dependencies: ["SluiceLoad", "SluiceCore"] + nio,
            swiftSettings: sluiceSettings
        ),
    ]
)
