# A stand-in for python:3.12-slim, for machines that reach Debian's archive but no image
# registry. .ci/docker-up builds it only when `docker pull python:3.12-slim` fails:
#   FROM the debootstrapped Debian (minbase + python3, python3-venv, ca-certificates,
#   imported as pocketmesh-ci/debian-minbase), a venv on PATH gives `python` and `pip`
#   as the real image does (Debian's own python3 refuses `pip install`, PEP 668).
# Its Python is Debian's (3.11 on bookworm): pocketmesh supports >= 3.11.
FROM pocketmesh-ci/debian-minbase
# The machine's CA bundle: containers reach PyPI through the engine's NAT, over the same
# TLS the machine sees.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /usr/local/py
ENV PATH=/usr/local/py/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
