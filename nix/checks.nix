# `nix flake check`: clippy (-D warnings), fmt, the test suite, docs, audit.
{ pkgs, craneLib, advisory-db, commonArgs, cargoArtifacts, all }:
{
  inherit all;

  clippy = craneLib.cargoClippy (commonArgs // {
    inherit cargoArtifacts;
    cargoClippyExtraArgs = "--workspace --all-targets --locked -- -D warnings";
  });

  fmt = craneLib.cargoFmt { inherit (commonArgs) src pname version; };

  doc = craneLib.cargoDoc (commonArgs // {
    inherit cargoArtifacts;
    cargoDocExtraArgs = "--workspace --no-deps";
  });

  audit = craneLib.cargoAudit { inherit (commonArgs) src pname version; inherit advisory-db; };

  # Tests in the sandbox: PostgreSQL and Redis come from local binaries
  # (jq-testkit starts them), Kafka from librdkafka's mock cluster. The
  # `nix` profile (.config/nextest.toml) leaves out what needs more than
  # the sandbox offers: the black-box suites build binaries with cargo.
  nextest = craneLib.cargoNextest (commonArgs // {
    inherit cargoArtifacts;
    nativeCheckInputs = [ pkgs.postgresql_15 pkgs.redis pkgs.prometheus pkgs.util-linux ];
    cargoNextestExtraArgs = "--workspace --profile nix";
  });
}
