# The three binaries, built with crane from one shared dependency build.
{ pkgs, craneLib, gitRev, root }:
let
  inherit (pkgs) lib;
  # Cargo sources plus what the build reads besides Rust: the protos, the
  # SQL migrations (embedded by sqlx::migrate!), insta snapshots and the
  # fuzz corpus (replayed as a test) for checks.
  src = lib.cleanSourceWith {
    src = root;
    filter = path: type:
      (craneLib.filterCargoSources path type)
      || lib.hasSuffix ".proto" path
      || lib.hasSuffix ".sql" path
      || lib.hasSuffix ".snap" path
      || lib.hasInfix "/fuzz/corpus" path
      || lib.hasSuffix "/.config" path
      || lib.hasInfix "/.config/" path;
  };

  nativeBuildInputs = with pkgs; [ protobuf cmake pkg-config perl ];
  # librdkafka (built by rdkafka-sys with cmake) wants the curl headers even
  # with curl off (docs/adr/0004), links zlib, and links OpenSSL for Kafka
  # over TLS and SASL/SCRAM (docs/adr/0014).
  buildInputs = with pkgs; [ curl zlib openssl ]
    ++ lib.optionals stdenv.isDarwin [ libiconv darwin.apple_sdk.frameworks.Security darwin.apple_sdk.frameworks.SystemConfiguration ];

  commonArgs = {
    inherit src nativeBuildInputs buildInputs;
    pname = "jq";
    version = "0.1.0";
    strictDeps = true;
    PROTOC = "${pkgs.protobuf}/bin/protoc";
    PROTOC_INCLUDE = "${pkgs.protobuf}/include";
    # No .git in the sandbox: build.rs takes the commit from here (NFR-017).
    JQ_GIT_COMMIT = gitRev;
  };

  # One dependency build shared by every package and check.
  cargoArtifacts = craneLib.buildDepsOnly commonArgs;

  bin = name: craneLib.buildPackage (commonArgs // {
    inherit cargoArtifacts;
    pname = name;
    cargoExtraArgs = "--locked -p ${name} --bin ${name}";
    # Tests run in checks.nextest, once, for the whole workspace.
    doCheck = false;
    meta.mainProgram = name;
  });

  jq-server = bin "jq-server";
  jq-worker = bin "jq-worker";
  jq-ctl = bin "jq-ctl";
in
{
  inherit commonArgs cargoArtifacts nativeBuildInputs buildInputs jq-server jq-worker jq-ctl;
  all = pkgs.symlinkJoin {
    name = "jq-0.1.0";
    paths = [ jq-server jq-worker jq-ctl ];
  };
}
