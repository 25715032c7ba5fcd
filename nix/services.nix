# `nix run .#services -- start|stop|status`: PostgreSQL 15, Redis 7 and a
# single-node Kafka (KRaft) on the ports the dev shell's JQ_TEST_* point at,
# with their data under ./.nix-services.
{ pkgs }:
pkgs.writeShellApplication {
  name = "jq-services";
  runtimeInputs = with pkgs; [ postgresql_15 redis apacheKafka coreutils ];
  text = builtins.readFile ./services.sh;
}
