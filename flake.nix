{
  description = "jq: a distributed job queue on PostgreSQL (server, worker, operator CLI)";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixpkgs-unstable";
    systems.url = "github:nix-systems/default";
    flake-utils = {
      url = "github:numtide/flake-utils";
      inputs.systems.follows = "systems";
    };
    crane.url = "github:ipetkov/crane";
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    advisory-db = {
      url = "github:rustsec/advisory-db";
      flake = false;
    };
  };

  outputs = { self, nixpkgs, flake-utils, crane, rust-overlay, advisory-db, ... }:
    flake-utils.lib.eachDefaultSystem (system:
      let
        pkgs = import nixpkgs {
          inherit system;
          overlays = [ (import rust-overlay) ];
        };
        # The toolchain CI and the dev shell share (rust-version in Cargo.toml is the floor).
        rustToolchain = pkgs.rust-bin.stable.latest.default.override {
          extensions = [ "rust-src" "clippy" "rustfmt" ];
        };
        craneLib = (crane.mkLib pkgs).overrideToolchain (_: rustToolchain);
        gitRev = self.shortRev or self.dirtyShortRev or "unknown";

        jq = import ./nix/packages.nix { inherit pkgs craneLib gitRev; root = ./.; };
        images = import ./nix/images.nix { inherit pkgs; inherit (jq) jq-server jq-worker; };
        services = import ./nix/services.nix { inherit pkgs; };
      in
      {
        packages = {
          inherit (jq) jq-server jq-worker jq-ctl;
          default = jq.all;
          oci-server = images.server;
          oci-worker = images.worker;
          services = services;
        };

        apps = {
          services = flake-utils.lib.mkApp { drv = services; };
          jq-server = flake-utils.lib.mkApp { drv = jq.jq-server; };
          jq-worker = flake-utils.lib.mkApp { drv = jq.jq-worker; };
          jq-ctl = flake-utils.lib.mkApp { drv = jq.jq-ctl; };
        };

        checks = import ./nix/checks.nix {
          inherit pkgs craneLib advisory-db;
          inherit (jq) commonArgs cargoArtifacts all;
        };

        devShells.default = import ./nix/shell.nix {
          inherit pkgs rustToolchain services;
          inherit (jq) nativeBuildInputs buildInputs;
        };

        formatter = pkgs.nixpkgs-fmt;
      });
}
