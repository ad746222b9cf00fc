# The patchbay operator image: `patchbay run` as a non-root user.
# Build: docker build -t patchbay/operator:0.1.0 .   (make e2e-kind does this)

FROM python:3.12.8-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/patchbay
COPY pyproject.toml README.md ./
COPY operator ./operator
# Runtime dependencies only: no dev extra, no build tools left behind.
RUN /opt/patchbay/bin/pip install --no-compile . \
    && /opt/patchbay/bin/pip uninstall --yes pip

FROM python:3.12.8-slim-bookworm
ENV PATH=/opt/patchbay/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 65532 patchbay \
    && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin patchbay
COPY --from=build /opt/patchbay /opt/patchbay
USER 65532:65532
ENTRYPOINT ["patchbay", "run"]
