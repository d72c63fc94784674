# One image for the server and the workers (the CUDA build of torch comes from PyPI with the pins).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mocov3_core ./mocov3_core
COPY server ./server
COPY worker ./worker
COPY mocolab ./mocolab
RUN pip install . && useradd --create-home mocolab
USER mocolab
EXPOSE 8000
CMD ["uvicorn", "server.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
