# Images for users without nix (the flake builds smaller ones: nix build .#oci-server).
#   docker build --target server -t jq-server .
#   docker build --target worker -t jq-worker .
# librdkafka links OpenSSL for Kafka over TLS and SASL/SCRAM (ADR 0014);
# PostgreSQL and Redis TLS use rustls with the system roots (ca-certificates).
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev cmake pkg-config libcurl4-openssl-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# No .git in the build context: pass the commit for --version (NFR-017).
ARG JQ_GIT_COMMIT=unknown
ENV JQ_GIT_COMMIT=${JQ_GIT_COMMIT}
RUN cargo build --release --locked --bins -p jq-server -p jq-worker -p jq-ctl

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 65532 --user-group --create-home jq
# Never root (FR-049, JQ-130).
USER 65532:65532
WORKDIR /home/jq

FROM runtime AS server
COPY --from=build /src/target/release/jq-server /src/target/release/jq-ctl /usr/local/bin/
EXPOSE 50051 8080 9090
ENTRYPOINT ["jq-server"]

FROM runtime AS worker
COPY --from=build /src/target/release/jq-worker /src/target/release/jq-ctl /usr/local/bin/
EXPOSE 8081 9091
ENTRYPOINT ["jq-worker"]
