# PromoStream as a container: the processor as one self-contained executable on Microsoft's runtime-deps image
# (the C libraries .NET needs, no .NET runtime: the executable carries its own). Build and run:
#   docker build -t promostream .
#   docker run --rm -e PROMOSTREAM__KAFKA__BOOTSTRAP_SERVERS=… -e PROMOSTREAM__POSTGRES__CONNECTION_STRING=… … promostream
# Configuration comes from PROMOSTREAM__SECTION__KEY variables (or a credentials.yaml mounted at /app/credentials.yaml).
# docker-compose.yml runs three replicas of it with Prometheus: docker compose --profile app up -d --build

FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
# The packages, in a layer of their own: it is rebuilt only when the project file changes, not on every code change.
COPY PromoStream.csproj ./
RUN dotnet restore PromoStream.csproj -r linux-x64 -p:SelfContained=true -p:PublishSingleFile=true
COPY . ./
# librdkafka stays a file beside the executable (a single file cannot dlopen a library from inside itself, and
# self-extraction would need a writable home for the non-root user). Of its three builds only centos8-librdkafka.so
# loads here: librdkafka.so needs libsasl2, which the image lacks, and the alpine one is for musl.
RUN dotnet publish PromoStream.csproj -c Release -r linux-x64 --self-contained -p:PublishSingleFile=true --no-restore -o /out \
 && rm /out/librdkafka.so /out/alpine-librdkafka.so /out/PromoStream.pdb

FROM mcr.microsoft.com/dotnet/runtime-deps:10.0 AS runtime
WORKDIR /app
COPY --from=build /out/ ./
# The image's own unprivileged user `app` (uid 1654), by number, so that a cluster's runAsNonRoot can check it.
USER 1654
# The metrics endpoint (metrics.port): PROMOSTREAM__METRICS__PORT=9464.
EXPOSE 9464
# No HEALTHCHECK: the image has no curl or wget to ask the metrics endpoint with; let the orchestrator probe port
# 9464 (a Kubernetes httpGet probe, or Prometheus' `up`) instead. A stuck processor is also visible in its stats line.
# Exec form: the processor is PID 1 and gets SIGTERM itself (docker stop), so it commits or aborts its batch and leaves
# its consumer group before exiting (within 9 s, inside docker's default 10 s).
ENTRYPOINT ["/app/PromoStream", "--process"]
