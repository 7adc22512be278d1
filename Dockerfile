# syntax=docker/dockerfile:1
# inceptiond as a container image, for linux/amd64 and linux/arm64 (README "Container"):
#   docker buildx build --platform linux/amd64,linux/arm64 -t inceptiond .
# It runs what the systemd unit runs (systemd/inceptiond.service, ExecStart), as the non-root user
# inceptiond (in the video group, for the cameras), with its state (outbox, seq counters, model cache)
# in the volume /var/lib/inceptiond and its configuration mounted at /etc/inceptiond. compose.yaml
# shows a whole setup. Not built by the tests (no container engine there): test/unit/container.test.ts
# checks what can be checked without one.

ARG NODE_IMAGE=node:20-bookworm-slim

# dist/ from the TypeScript. JavaScript is the same on every architecture, so this stage runs once, on
# the builder's own platform; no native module is needed to compile (--ignore-scripts).
FROM --platform=$BUILDPLATFORM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN ONNXRUNTIME_NODE_INSTALL=skip npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM ${NODE_IMAGE}
# fswebcam for the default capture backend (webcam), libjemalloc2 for the allocator the unit preloads
# (below). The ffmpeg backend (RTSP, continuous V4L2) needs ffmpeg too:
# --build-arg APT_PACKAGES="fswebcam libjemalloc2 ffmpeg".
ARG APT_PACKAGES="fswebcam libjemalloc2"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ${APT_PACKAGES} \
 && rm -rf /var/lib/apt/lists/*
# The user of systemd/inceptiond.sysusers.conf: a system user with its own group, in video, no login.
RUN useradd --system --user-group --groups video --home-dir /var/lib/inceptiond --no-create-home \
      --shell /usr/sbin/nologin inceptiond \
 && mkdir -p /var/lib/inceptiond /etc/inceptiond \
 && chown inceptiond:inceptiond /var/lib/inceptiond \
 && chmod 0750 /var/lib/inceptiond

WORKDIR /opt/inceptiond
ENV NODE_ENV=production
COPY package.json package-lock.json ./
# The runtime dependencies, for the image's own architecture (sharp's libvips and ONNX Runtime's CPU
# build come inside their npm packages). ONNX Runtime's install script would only fetch CUDA builds.
RUN ONNXRUNTIME_NODE_INSTALL=skip npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force
COPY --from=build /src/dist ./dist
COPY config ./config
COPY models ./models

# As in the unit (see its comments, README "Daemon memory"): set before Node starts.
ENV LD_PRELOAD=libjemalloc.so.2
ENV MALLOC_CONF=narenas:1,background_thread:true,dirty_decay_ms:1000,tcache_max:1024
ENV MALLOC_MMAP_THRESHOLD_=65536
ENV MALLOC_ARENA_MAX=1
ENV UV_THREADPOOL_SIZE=2
ENV NODE_OPTIONS="--max-semi-space-size=1 --v8-pool-size=1"

USER inceptiond
VOLUME /var/lib/inceptiond
# /healthz, /metrics, /status when http.host is 0.0.0.0 (INCEPTIOND_HTTP_HOST); the default is loopback.
EXPOSE 9464
# /healthz says whether the daemon makes progress (the unit's watchdog asks the same). Docker only marks
# the container unhealthy; an orchestrator (or an autoheal container) restarts it.
HEALTHCHECK --interval=60s --timeout=10s --start-period=10m \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.INCEPTIOND_HTTP_PORT || 9464) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM stops the daemon cleanly (docker stop), SIGHUP re-reads the configuration (docker kill -s HUP).
STOPSIGNAL SIGTERM
# The unit's CPUSchedulingPolicy=batch (README "CPU scheduling"), by chrt (util-linux, in every Debian
# image): no privilege needed, but a runtime whose seccomp profile refuses sched_setscheduler gets the
# daemon on the default policy instead of a container that cannot start (the daemon's `running` line
# and `info` request say which it got).
ENTRYPOINT ["/bin/sh", "-c", "chrt --batch 0 true 2>/dev/null && exec chrt --batch 0 \"$@\"; exec \"$@\"", "inceptiond", "node", "/opt/inceptiond/dist/cli.js"]
CMD ["run", "-c", "/etc/inceptiond/config.json"]
