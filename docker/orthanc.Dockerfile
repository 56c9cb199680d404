# Orthanc with the DICOMweb plugin from Debian (the same packages `xcwado up` runs on the host), for a
# country's PACS with `backend = "orthanc"`. Built by `make docker` from the same BASE as the testbed image;
# apt fetches from the mirror the base is configured with (the build runs with --network host).
# The entrypoint writes Orthanc's configuration from XCWADO_ORTHANC_* variables (orthanc-entrypoint.py).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/* /etc/orthanc/*.json \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/xcwado --create-home xcwado
COPY orthanc-entrypoint.py /usr/local/bin/xcwado-orthanc
COPY healthcheck.py /usr/local/bin/xcwado-health
ENV XCWADO_ORTHANC_STORAGE=/var/lib/xcwado/orthanc
USER xcwado
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD ["python3", "-I", "-S", "/usr/local/bin/xcwado-health"]
ENTRYPOINT ["python3", "/usr/local/bin/xcwado-orthanc"]
