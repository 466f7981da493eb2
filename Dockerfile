# syntax=docker/dockerfile:1
#
# The earshot services image: one binary, three commands (the Helm chart runs
# it with args ["serve"], ["load"], ["migrate"]).
#
#   docker build -t earshot .
#   docker run --rm -e DATABASE_URL=... earshot migrate
#
# Not built by scripts/check-deploy: the machines it runs on have no Docker
# engine. It is linted there by checkov (--framework dockerfile).
#
# checkov:skip=CKV_DOCKER_2: No HEALTHCHECK: the image runs on Kubernetes, whose probes call /healthz and /readyz; distroless has no shell or curl for one.

# ---- build -----------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target dir between builds, so a code
# change recompiles earshot, not its dependencies. The binary is copied out
# of the cache mount, which does not survive the RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release -p earshot --locked \
 && install -D -m 0755 target/release/earshot /out/earshot

# ---- runtime ---------------------------------------------------------------
# distroless cc: glibc, libgcc, CA certificates, tzdata; no shell, no package
# manager. The :nonroot tag's default user is 65532, the uid the chart runs as.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/earshot /usr/local/bin/earshot
USER 65532:65532
# serve (API) and load (metrics/health); both bind 127.0.0.1 unless told
# otherwise: the chart sets EARSHOT_API_ADDR / EARSHOT_LOADER_ADDR to 0.0.0.0.
EXPOSE 8080 9091
ENTRYPOINT ["/usr/local/bin/earshot"]
CMD ["serve"]
