# Neutrino's one image: every role is a command line, as the manifests in k8s/ run it
# (`serve --mode http`, `serve --mode nats --pool P`, `autoscale`, `manage migrate`).
#
#   docker build -t REGISTRY/neutrino:0.1.0 .
#   neutrino up --image REGISTRY/neutrino:0.1.0
#
# Your tasks: build FROM this image, COPY your task modules into /app (the working directory, on
# the import path) and set NEUTRINO_TASK_MODULES in k8s/base/neutrino-configmap.yaml.
# Dependencies come from requirements.lock (exact versions; `make lock` regenerates it).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The dependencies, exactly as locked: this layer changes only with the lock file.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-deps -r /tmp/requirements.lock
# The project itself runs from /app (templates/ and static/ sit beside the code).
WORKDIR /app
COPY manage.py pyproject.toml ./
COPY neutrino ./neutrino
COPY neutrino_site ./neutrino_site
COPY tasks_app ./tasks_app
COPY pools_app ./pools_app
COPY workers ./workers
COPY templates ./templates
COPY static ./static
COPY examples ./examples
COPY k8s ./k8s
# The `neutrino` command, as pyproject.toml's [project.scripts] defines it, without a build step.
RUN printf '#!/opt/venv/bin/python\nimport sys\nfrom neutrino_site.cli import main\nsys.exit(main())\n' \
        > /opt/venv/bin/neutrino \
    && chmod 0755 /opt/venv/bin/neutrino \
    && python -m compileall -q /app

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 neutrino \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin neutrino
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
# The root filesystem is read-only in the manifests: nothing writes outside /tmp (an emptyDir there)
# and the SQLite volume of the single-node overlay (/data). HOME is /tmp for what writes under it
# (gunicorn's control socket, ~/.gunicorn/gunicorn.ctl).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    NEUTRINO_DATA_DIR=/tmp/neutrino
WORKDIR /app
# Numeric, so Kubernetes can check runAsNonRoot.
USER 10001:10001
EXPOSE 8000 8001
ENTRYPOINT ["neutrino"]
CMD ["serve", "--mode", "http", "--port", "8000"]
