# The model server for Heroku's container stack (heroku.yml) or any container host.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_DEBUG=false \
    PORT=8000 \
    MODEL_CACHE_DIR=/tmp/model-cache

WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
# Static files are collected at build time and served by WhiteNoise; the key only lets
# settings load here and is not in the image's environment.
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput \
    && useradd --create-home --uid 10001 app

# Model files are cached under /tmp, writable whichever user the platform runs the image as.
USER 10001
EXPOSE 8000
# Binds $PORT at once: no model download and no TensorFlow import before the first request.
CMD ["bin/web"]
