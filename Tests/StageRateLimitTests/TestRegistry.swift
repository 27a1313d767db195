import SluiceCore
import SluiceRuntime
import SluiceTestKit

/// The built-in registry plus the test kit's `memory` sink.
let testRegistry = PluginRegistry.builtin.registering(InMemorySinkPlugin.self)
