# etcd for deploy/compose.etcd.yaml, from Debian's etcd-server package (the one the tests
# run), so the example needs no image of its own from a registry. Any etcd 3.4+ image works
# as well: set ETCD_IMAGE (and keep the command compose.etcd.yaml gives it).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/etcd && chown 10001:10001 /var/lib/etcd
USER 10001:10001
EXPOSE 2379
ENTRYPOINT ["etcd"]
