# Amber's image: `amber` (the CLI, and the in-pod agent `amber sidecar` that
# the webhook injects), the engine plugins `amber-plugin-*` and
# `amber-controller`, all in /usr/local/bin, on a distroless base, run as
# an unprivileged user.
#
#   docker build -t amber:dev .
#   docker run --rm amber:dev --help                        # the CLI
#   docker run --rm --entrypoint amber-controller amber:dev --help
#
# The controller's Deployment sets `command: [amber-controller]`; the
# webhook injects the sidecar as `amber sidecar` (--sidecar-image names this
# image). The test bed cannot run docker: conformance/testbed's
# BuildAmberImage writes an image of the same layout (same paths, user and
# entrypoint; a busybox shell added for its tests), and
# controller/internal/image checks that this file and that image agree.
#
# What the sidecar needs at run time, and so what this image holds:
#   - amber and amber-plugin-<engine> side by side (the sidecar looks for
#     the plugin in $AMBER_PLUGIN_DIR, then beside amber);
#   - CA certificates, for the object stores' HTTPS (S3, B2);
#   - a writable /tmp and cache directory: in a pod the webhook mounts
#     emptyDirs there, as the root filesystem is read-only.
# It does not hold any database's client programs. PostgreSQL's physical
# backups, WAL archiving, freeze/thaw and probes speak the server's
# protocols from Go and need none; so do MySQL's logical dumps and binlog
# archiving. Logical PostgreSQL dumps and restores run pg_dump/pg_restore,
# MySQL's logical restores and replay run the mariadb (or mysql) client
# and mariadb-binlog, and MySQL's physical backups run mariadb-backup: those
# exist in the database's own image, not here,
# and the plugin runs in the sidecar's container. To use them, build an
# image FROM this one with the client programs of the server's major
# version added (found in the target's bin_dir setting,
# /usr/lib/postgresql/<major>/bin, or on PATH), or mount them into the
# sidecar.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static binaries without local paths; the commit is not stamped (.git
# stays out of the build context). cgo links the zstd C library's encoder
# into the repository writer (about 1.6x the Go encoder's bytes per CPU
# second at the fastest and default levels, docs/benchmarks.md); netgo and
# osusergo keep name resolution and user lookup in Go, so nothing of libc's
# NSS is needed and the binaries link statically. With CGO_ENABLED=0 they build too, with the Go encoder.
ENV CGO_ENABLED=1 GOFLAGS=-buildvcs=false
RUN mkdir -p /out && \
    go build -trimpath -tags netgo,osusergo \
      -ldflags="-s -w -linkmode external -extldflags -static" -o /out/ \
      ./sidecar/cmd/amber ./controller/cmd/amber-controller ./plugins/*/cmd/amber-plugin-*

# distroless/static has CA certificates, /tmp, tzdata and the nonroot user
# (65532) already; the CA bundle is copied from the build stage all the
# same, so the image carries exactly the bundle it was built with (and
# works on a scratch base too).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/ /usr/local/bin/
ENV PATH=/usr/local/bin:/usr/bin:/bin
# Numeric, so the kubelet can check runAsNonRoot against the image.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/amber"]
