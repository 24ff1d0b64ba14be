# TumorTrace research demo. Same install step as CI and `make run`: `make install` into a venv.
#   docker build -t tumortrace .
#   docker run -p 7860:7860 -e TUMORTRACE_AUTH="reviewer:change-me" tumortrace
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends make libgomp1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt Makefile ./
RUN make install VENV=/opt/venv && rm -rf /root/.cache/pip
COPY . .
ENV PATH=/opt/venv/bin:$PATH GRADIO_ANALYTICS_ENABLED=False PYTHONUNBUFFERED=1
RUN useradd --create-home tumortrace
USER tumortrace
EXPOSE 7860
CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
