# tokenplace-relay container image: one Bun-compiled binary on distroless, as uid 65532.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg RELAY_BUILD_REVISION=$(git rev-parse --short=12 HEAD) -t tokenplace-relay .
#   docker buildx build --platform linux/amd64,linux/arm64 --target binaries \
#     --output type=local,dest=out .          # just the two standalone binaries (release assets)
#
# Multi-arch without QEMU: the builder stage always runs on the build machine's platform
# ($BUILDPLATFORM) and cross-compiles with `bun build --compile --target=bun-linux-<arch>`; Bun
# aborts inside QEMU-emulated build stages, so no stage for the target platform runs a command.
# The final stage only copies files, so buildx assembles the arm64 image on an amd64 runner.
#
# No `# syntax=` line on purpose: that would pull an unpinned frontend image at build time. The
# BuildKit built into Docker >= 23 / buildx understands everything used here (RUN --mount,
# COPY --chmod).
#
# Base images are pinned by the digest of their multi-platform index (one pin serves amd64 and
# arm64). To bump one, on a machine with registry access:
#   docker buildx imagetools inspect gcr.io/distroless/base-nossl-debian12:nonroot   # "Digest:" line
#   docker buildx imagetools inspect node:22-bookworm-slim
# paste the new sha256 after the tag below, then run .ci/run (test/container/dockerfile.test.ts
# checks that every FROM is pinned) and the build workflow (which pulls both platforms).
# Provenance of the current pins: see docs/release.md ("Base images").

# ---------------------------------------------------------------------------------- builder
# node:22-bookworm-slim (Node 22.23.3). Node/npm only install the pinned Bun from package-lock.json
# (the `bun` npm package), so the image builds with exactly the Bun version CI tests with; Bun then
# fetches the target runtime (@oven/bun-linux-<arch>) from the npm registry to cross-compile.
FROM --platform=$BUILDPLATFORM node:22-bookworm-slim@sha256:43ac6c60b8f89723f746e8a92ce91abd5017e627ce1ddfe4238355d3a30b772c AS build
WORKDIR /src
ENV npm_config_audit=false \
    npm_config_fund=false \
    npm_config_update_notifier=false
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npm ci
COPY tsconfig.json ./
COPY scripts/build.ts scripts/build.ts
COPY src/ src/
# TARGETARCH is set by buildx per platform: amd64 or arm64 (Bun calls them x64 and arm64).
ARG TARGETARCH
ARG BUILDARCH
# Baked into the binary (`tokenplace-relay --version`); the workflow passes the commit SHA.
ARG RELAY_BUILD_REVISION=unknown
# scripts/build.ts compiles src/main.ts for bun-linux-<arch> with Bun.build (.env and bunfig.toml
# autoload off, its start-up trims plugin): the same build as `npm run build`.
# When the build machine has the target's arch the fresh binary is also smoke-tested (--version).
RUN --mount=type=cache,target=/root/.bun/install/cache,sharing=locked \
    set -eu; \
    case "${TARGETARCH}" in \
      amd64) arch=x64 ;; \
      arm64) arch=arm64 ;; \
      *) echo "unsupported TARGETARCH=${TARGETARCH} (amd64 or arm64)" >&2; exit 1 ;; \
    esac; \
    RELAY_BUILD_REVISION="${RELAY_BUILD_REVISION}" \
      node_modules/.bin/bun run scripts/build.ts --target "${arch}" --outdir /out/release; \
    mkdir -p /out/image; \
    cp "/out/release/tokenplace-relay-linux-${arch}" /out/image/tokenplace-relay; \
    if [ "${TARGETARCH}" = "${BUILDARCH}" ]; then /out/image/tokenplace-relay --version; fi

# --------------------------------------------------------------------------------- binaries
# `--target binaries --output type=local,dest=DIR`: DIR/tokenplace-relay-linux-<arch> per platform.
# The release workflow attaches these, so the release binaries come from the same build as the image.
FROM scratch AS binaries
COPY --from=build /out/release/ /

# ------------------------------------------------------------------------------------ image
# base-nossl: glibc (libc, libm, libpthread, libdl, ld-linux; all the binary links, see ldd),
# /etc/passwd with nonroot = 65532, CA certificates, tzdata; no shell, no OpenSSL (Bun ships its
# own TLS). `static` lacks glibc and `cc` adds libstdc++/libgcc the binary does not use.
FROM gcr.io/distroless/base-nossl-debian12:nonroot@sha256:be40c00dfabd86576d92666e87e406714d5618342de1a0c213ad232de255172e AS image

ARG RELAY_VERSION=dev
ARG RELAY_BUILD_REVISION=unknown
ARG RELAY_BUILD_CREATED=1970-01-01T00:00:00Z
# The workflow passes the real values (and docker/metadata-action sets the same label keys).
ARG RELAY_SOURCE=unknown
LABEL org.opencontainers.image.title="tokenplace-relay" \
      org.opencontainers.image.description="The token.place relay: broker protocol and streaming reverse proxy to the GPU upstream, one Bun binary." \
      org.opencontainers.image.source="${RELAY_SOURCE}" \
      org.opencontainers.image.revision="${RELAY_BUILD_REVISION}" \
      org.opencontainers.image.version="${RELAY_VERSION}" \
      org.opencontainers.image.created="${RELAY_BUILD_CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="gcr.io/distroless/base-nossl-debian12:nonroot"

# Owned by root and not writable: the relay (uid 65532) cannot modify its own binary.
COPY --from=build --chown=0:0 --chmod=0555 /out/image/tokenplace-relay /usr/local/bin/tokenplace-relay

# The relay writes nothing to disk (logs go to stdout; verified under strace and in a read-only
# bubblewrap root without /tmp, see docs/release.md), so `readOnlyRootFilesystem: true` needs no
# volume. It does need /proc, which every container runtime mounts.
USER 65532:65532
WORKDIR /home/nonroot
ENV RELAY_PORT=5010
# JavaScriptCore sizes its heap growth from the RAM it sees, which in a container is the host's:
# on a 24 GiB host it let garbage of read bodies pile up to twice the relay's memory budget before
# collecting. Told the reference pod's 512 MiB it collects on its own before the memory guard must
# force it (docs/security.md, "Memory"); the chart sets it to the pod's own limit.
ENV BUN_JSC_forceRAMSize=536870912
EXPOSE 5010

# Runs inside the container with its environment, so it follows RELAY_PORT. The check's own HTTP
# timeout is 3 s (src/cli/healthcheck.ts); Kubernetes ignores HEALTHCHECK and uses the chart's probes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/tokenplace-relay", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tokenplace-relay"]
