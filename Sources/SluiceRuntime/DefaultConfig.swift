/// The config `sluice serve` runs when no `--config` is given.
///
/// It is also `examples/default.yaml` (a test checks they are identical).
public enum DefaultConfig {
    public static let fileName = "<embedded default>"

    public static let yaml = """
    # Sluice's embedded default: what `sluice serve` runs without --config.
    # HTTP on 127.0.0.1:8080 (curl -T file http://127.0.0.1:8080/upload/file) and
    # TCP on 127.0.0.1:8888 (cat file | nc -N 127.0.0.1 8888) into ./sluice-data,
    # with the content's sha256 recorded in every receipt.
    # /healthz and /metrics on 127.0.0.1:9090.
    listeners:
      http:
        type: http
        listen: 127.0.0.1:8080
        routes:
          /upload:
            pipeline: default
      tcp:
        type: tcp
        listen: 127.0.0.1:8888
        pipeline: default

    pipelines:
      default:
        stages:
          - type: hash
            algorithm: sha256
        sink:
          type: disk
          root: ./sluice-data
          name: "{name}"
          on_conflict: unique

    admin:
      listen: 127.0.0.1:9090

    """
}
