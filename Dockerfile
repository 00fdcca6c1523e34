# bids-iron BIDS-App image.
#   docker build -t bids-iron .                                 (fetches TemplateFlow files)
#   docker build --build-arg TEMPLATEFLOW_PREFETCH=0 -t bids-iron .   (no network for templates)
#   docker run --rm -v /data:/data:ro -v /out:/out bids-iron /data /out participant
FROM debian:bookworm-slim AS build
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/bids-iron
ENV PATH=/opt/bids-iron/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.rst LICENSE /src/
COPY bids_iron /src/bids_iron
RUN pip install /src && rm -rf /src
# The numba kernels compiled once, here (else every container run spends ~15-20 s per process
# compiling them), into a cache folder any user can read. numba only uses a writable cache,
# so at start bids-iron copies this one into a writable folder (bids_iron/_numba_cache.py).
# CPU "generic" (also at run time): a cache compiled for the build machine's CPU would be
# rejected, and recompiled, on any other CPU; the kernels measured no slower for it.
ENV NUMBA_CPU_NAME=generic
RUN NUMBA_CACHE_DIR=/opt/numba-cache python -m bids_iron._numba_cache \
 && chmod -R a+rX /opt/numba-cache
# TemplateFlow files of the default atlases, fetched at build time (needs internet).
# TEMPLATEFLOW_PREFETCH=auto (default) tries and goes on without them when offline;
# 1 makes a failed download fail the build; 0 skips. Without them, the app says clearly
# that templates are missing, or uses a TemplateFlow home mounted at run time.
ARG TEMPLATEFLOW_PREFETCH=auto
ENV TEMPLATEFLOW_HOME=/opt/templateflow
RUN mkdir -p "$TEMPLATEFLOW_HOME" \
 && if [ "$TEMPLATEFLOW_PREFETCH" != "0" ]; then \
      timeout 1800 python -m bids_iron.anatomy.prefetch \
      || { [ "$TEMPLATEFLOW_PREFETCH" = "auto" ] \
           && echo "bids-iron: TemplateFlow prefetch failed (offline?); image built without templates"; }; \
    fi

FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --shell /usr/sbin/nologin bidsiron
COPY --from=build /opt/bids-iron /opt/bids-iron
COPY --from=build /opt/templateflow /opt/templateflow
COPY --from=build /opt/numba-cache /opt/numba-cache
# Caches go to /tmp so the image runs on a read-only root file system (the precompiled numba
# kernels of /opt/numba-cache are copied to $HOME/.cache/bids-iron/numba at start).
ENV PATH=/opt/bids-iron/bin:$PATH \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    NUMBA_CACHE_DIR=/opt/numba-cache \
    NUMBA_CPU_NAME=generic \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1
USER 1000:1000
WORKDIR /tmp
LABEL org.opencontainers.image.title="bids-iron" \
      org.opencontainers.image.description="BIDS-App: brain iron (R2*, local field shift, QSM) from multi-echo GRE" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/bids-iron/bids-iron" \
      org.opencontainers.image.url="https://github.com/bids-iron/bids-iron"
ENTRYPOINT ["bids-iron"]
