# syntax=docker/dockerfile:1

# popbridge: a static binary on a distroless base, run as a non-root user.
#
#   docker build -t popbridge .
#   docker run -d -p 1110:1110 -p 1995:1995 \
#     -v "$PWD/config:/config:ro" -v popbridge-state:/state popbridge
#
# See README.md, section Docker, for a configuration to put in /config.

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

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/popbridge /popbridge
# Owned by the nonroot user (65532), so that a named volume mounted on
# /state starts out writable.
COPY --from=build --chown=65532:65532 /out/config /config
COPY --from=build --chown=65532:65532 /out/state /state
USER 65532:65532
VOLUME ["/config", "/state"]
# 1110: POP3 with STLS; 1995: POP3 over implicit TLS (pop3s).
EXPOSE 1110 1995
# Other commands: docker run --rm -i IMAGE hash-password,
# docker run --rm -v ...:/config IMAGE check -config /config/popbridge.yaml
ENTRYPOINT ["/popbridge"]
CMD ["serve", "-config", "/config/popbridge.yaml"]
