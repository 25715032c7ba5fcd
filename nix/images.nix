# OCI images for server and worker (NFR-018: < 200 MB; FR-049/JQ-130: the
# worker never runs as root). Load with `docker load < result`.
{ pkgs, jq-server, jq-worker }:
let
  uid = "65532";
  # /etc/passwd and /etc/group with an unprivileged `jq` user, and a /tmp.
  base = pkgs.runCommand "jq-image-base" { } ''
    mkdir -p $out/etc $out/tmp $out/home/jq
    echo "root:x:0:0:root:/root:/sbin/nologin" > $out/etc/passwd
    echo "jq:x:${uid}:${uid}:jq:/home/jq:/sbin/nologin" >> $out/etc/passwd
    echo "root:x:0:" > $out/etc/group
    echo "jq:x:${uid}:" >> $out/etc/group
  '';
  image = { name, pkg, ports, extra ? [ ] }: pkgs.dockerTools.buildLayeredImage {
    inherit name;
    tag = "0.1.0";
    contents = [ base pkgs.cacert pkg ] ++ extra;
    fakeRootCommands = ''
      chmod 1777 tmp
      chown ${uid}:${uid} home/jq
    '';
    config = {
      Entrypoint = [ "${pkg}/bin/${name}" ];
      User = "${uid}:${uid}";
      WorkingDir = "/home/jq";
      Env = [
        "SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt"
        "PATH=/bin:${pkg}/bin"
        "HOME=/home/jq"
      ];
      ExposedPorts = builtins.listToAttrs (map (p: { name = "${toString p}/tcp"; value = { }; }) ports);
      Labels = {
        "org.opencontainers.image.title" = name;
        "org.opencontainers.image.version" = "0.1.0";
      };
    };
  };
in
{
  server = image { name = "jq-server"; pkg = jq-server; ports = [ 50051 8080 9090 ]; };
  # Jobs are subprocesses: give them a shell and the basic tools.
  worker = image { name = "jq-worker"; pkg = jq-worker; ports = [ 8081 9091 ]; extra = [ pkgs.busybox ]; };
}
