# syntax=docker/dockerfile:1

# popbridge: a static binary on a distroless base (CA certificates, no
# shell), run as a non-root user.
#
#   docker build -t popbridge .
#   docker run -d -p 110:110 -p 995:995 -p 127.0.0.1:8080:8080 \
#     -v "$PWD/config:/config:ro" -v popbridge-state:/state popbridge
#
# /config/popbridge.yaml is the configuration (listen on 0.0.0.0:110,
# 0.0.0.0:995 and, for the health check, 0.0.0.0:8080; state_dir: /state).
# See docs/deploy.md for it, compose and Kubernetes.

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=""
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/popbridge ./cmd/popbridge \
 && mkdir -p /out/config /out/state

# static-debian12 holds /etc/ssl/certs/ca-certificates.crt, /etc/passwd
# with the nonroot user (65532) and tzdata; nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/popbridge /popbridge
# Owned by the nonroot user, so that a named volume mounted on /state
# starts out writable.
COPY --from=build --chown=65532:65532 /out/config /config
COPY --from=build --chown=65532:65532 /out/state /state
USER 65532:65532
VOLUME ["/config", "/state"]
# 110: POP3 with STLS; 995: POP3 over implicit TLS (pop3s); 8080: the
# operations listener (listen.http: /healthz, /readyz, /metrics, /status).
# A non-root process may bind 110 and 995 because Docker (20.10 and later)
# sets net.ipv4.ip_unprivileged_port_start=0 in the container.
EXPOSE 110 995 8080
# Exit 0 when /healthz on listen.http of the configuration answers 200.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/popbridge", "healthcheck", "-config", "/config/popbridge.yaml"]
# Other commands: docker run --rm -i IMAGE hash-password,
# docker run --rm -v ...:/config IMAGE check -config /config/popbridge.yaml
ENTRYPOINT ["/popbridge"]
CMD ["serve", "-config", "/config/popbridge.yaml"]
