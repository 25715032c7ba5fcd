# `nix develop`: everything to build, test and run jq, and the services the
# tests talk to (`nix run .#services` starts them; the JQ_TEST_* variables
# below already point at them).
{ pkgs, rustToolchain, services, nativeBuildInputs, buildInputs }:
pkgs.mkShell {
  inherit buildInputs;
  nativeBuildInputs = nativeBuildInputs ++ (with pkgs; [
    rustToolchain
    cargo-nextest
    cargo-insta
    sqlx-cli
    postgresql_15
    redis
    apacheKafka
    prometheus
    grpcurl
    services
  ]);
  PROTOC = "${pkgs.protobuf}/bin/protoc";
  PROTOC_INCLUDE = "${pkgs.protobuf}/include";
  JQ_TEST_DATABASE_URL = "postgres://postgres@127.0.0.1:55432/postgres";
  JQ_TEST_REDIS_URL = "redis://127.0.0.1:56379";
  JQ_TEST_KAFKA_BROKERS = "127.0.0.1:59092";
  shellHook = ''
    echo "jq dev shell: run 'jq-services start' (or 'nix run .#services -- start'), then 'cargo nextest run --workspace'."
    echo "Without the services, unset JQ_TEST_DATABASE_URL JQ_TEST_REDIS_URL JQ_TEST_KAFKA_BROKERS: the tests start local ones."
  '';
}
