# The image an AWS Batch job definition runs (docs/aws-batch.md): `retrainer batch child`
# by default, any other `retrainer` command by overriding the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/retrainer
# The dependencies first, pinned by constraints.txt (the CPU build of torch), so that a
# change to the code alone rebuilds only the last layers.
COPY pyproject.toml constraints.txt README.md ./
COPY retrainer ./retrainer
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && pip install -c constraints.txt . "boto3>=1.34"

# A trainer of your own: copy its package here and set [trainer] plugin (or build FROM
# this image and pip install it).
RUN useradd --create-home --uid 10001 retrainer
USER retrainer
WORKDIR /home/retrainer

ENTRYPOINT ["retrainer"]
CMD ["batch", "child"]
