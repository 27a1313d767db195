import SluiceCore

/// The `tee` sink: one upload stored by several branches, each with its own stages
/// and sink, all or nothing.
///
/// Keys:
/// - `branches` (list, required): each `{ stages: [...], sink: {...} }`, like a
///   pipeline. Every branch sink must commit in two phases (a ``PreparingSink``:
///   `disk`, `spool`, `s3`, or another `tee`); `rotate` appends and cannot take part.
///
/// ```yaml
/// sink:
///   type: tee
///   branches:
///     - stages: [{ type: compress, format: gzip }]
///       sink: { type: s3, bucket: archive, key: "{name}.gz" }
///     - sink: { type: disk, root: /srv/copy }
/// ```
public enum SinkTee: SinkPlugin {
    public static let type = "tee"
    public static let summary = "Stores each upload through several branches (each with its own stages and sink), all or nothing."

    public struct Configuration: Decodable, Sendable {
        public var branches: [PipelineSpec]

        enum CodingKeys: String, CodingKey { case branches }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            branches = try c.decode([PipelineSpec].self, forKey: .branches)
            if branches.isEmpty {
                throw decoder.configIssue("branches", "needs at least one branch")
            }
        }
    }

    public static let keys: [ConfigKey] = [
        ConfigKey("branches", "list of { stages, sink }", "The branches; each gets every byte of the upload, through its own `stages` (default none) into its `sink`, which must commit in two phases (disk, spool, s3, tee). The receipt lists every branch's location; every branch commits or none does."),
    ]

    public static func make(_ configuration: Configuration, environment: PluginEnvironment) throws -> any Sink {
        var issues: [ConfigIssue] = []
        var branches: [TeeSink.Branch] = []
        for (i, spec) in configuration.branches.enumerated() {
            let branchEnvironment = environment.child(.key("branches"), .index(i))
            do {
                let pipeline = try spec.build(name: PathComponent.render(branchEnvironment.path), environment: branchEnvironment)
                guard let sink = pipeline.sink as? any PreparingSink else {
                    issues.append(branchEnvironment.issue("sink", "a tee branch needs a sink that commits in two phases (such as disk, spool or s3); \"\(spec.sink.type)\" cannot be undone once written"))
                    continue
                }
                branches.append(TeeSink.Branch(stages: pipeline.stages.map(\.stage), sink: sink))
            } catch let error as ConfigError {
                issues.append(contentsOf: error.issues)
            } catch let error as ConfigIssue {
                issues.append(error)
            }
        }
        guard issues.isEmpty else { throw ConfigError(issues) }
        return TeeSink(branches: branches)
    }
}
