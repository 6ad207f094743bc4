"""Service settings: one pydantic-settings class, environment prefix PURIFIER_."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The project's default purifiers when PURIFIER_DEFAULT_MODEL is unset, best first: the
# first one loaded is served. photo-guided, the natural-image purifier (RGB photographs),
# is served whenever it is in the model repository; fmnist-nrp only where it is not.
PREFERRED_DEFAULT_MODELS = ("photo-guided", "fmnist-nrp")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PURIFIER_", protected_namespaces=())

    # Models
    model_repository: Path = Field(Path("exported_models"), description="Triton-style model folder")
    default_model: str | None = Field(
        None,
        description="served when a request names none (unset: photo-guided if loaded, "
        "else fmnist-nrp, else the first model by name)",
    )
    models: list[str] | None = Field(None, description="load only these (default: all)")

    # onnxruntime
    providers: list[Literal["tensorrt", "cuda", "cpu"]] = Field(
        ["cuda", "cpu"], description="onnxruntime execution providers, first choice first"
    )
    require_gpu: bool = Field(False, description="fail start-up if CUDA is not the provider used")
    instances: int = Field(
        1,
        ge=1,
        description="model instances per model (Triton's instance_group count): this many "
        "batches run at once, each in its own onnxruntime session",
    )
    intra_op_threads: int = Field(
        0, ge=0, description="threads per instance; 0 = the usable cores divided among instances"
    )
    inter_op_threads: int = Field(1, ge=0, description="onnxruntime threads between graph nodes")
    allow_spinning: bool = Field(
        False,
        description="onnxruntime worker threads busy-wait between runs (steals CPU "
        "from decode/encode and from a neighbouring model container)",
    )
    precision: Literal["auto", "fp32", "fp16", "int8"] = Field(
        "auto",
        description="auto: model.fp16.onnx where the model has one and runs on a GPU, "
        "float32 otherwise; fp16 and int8 insist on the half-precision or quantised file "
        "(int8: photo-guided 1.35-1.9x faster on a CPU; its fooling rates beside float32's "
        "in its card)",
    )
    cpu_graph: bool = Field(
        False,
        description="on a CPU, float32 from model.cpu.onnx (onnxruntime's graph optimised "
        "at export) where the card lists one written by this onnxruntime: opens ~10 ms "
        "sooner, runs no faster on the exported models (benchmarks/results/model_latency.md)",
    )
    io_binding: bool = Field(
        False,
        description="run through onnxruntime IO binding: input bound from host memory, "
        "output bound on the device and fetched once",
    )
    cpu_mem_arena: bool = Field(
        True,
        description="each CPU session keeps the memory of its largest batch (about 1.3 GB "
        "for fmnist-nrp at 16 x 224x224); false frees it after every run, at about half "
        "the throughput on large batches",
    )
    gpu_mem_limit_mb: int = Field(0, ge=0, description="0 = no limit")
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = Field(
        "HEURISTIC", description="cuDNN's convolution algorithm search (CUDA provider)"
    )

    # Batching
    max_batch_size: int = Field(16, ge=1, description="images per batch, at most")
    max_batch_pixels: int | None = Field(
        16 * 256 * 256,
        ge=1,
        description="H x W summed over a batch, at most (at least one image): bounds the "
        "memory of a batch of large tiles (16 of 256x256, 2 of 640x640); null: no bound",
    )
    max_queue_delay_ms: float = Field(
        4.0,
        ge=0,
        description="longest a batch waits to fill, only while more requests are on their way",
    )
    max_queue_size: int = Field(256, ge=1, description="images waiting, per model")
    max_queue_wait_s: float | None = Field(
        None,
        gt=0,
        description="also refuse (503) a request that would wait longer than this behind "
        "the measured work ahead of it (default: only the deadline decides)",
    )
    admission_headroom: float = Field(
        0.75,
        gt=0,
        le=1,
        description="admit a request only if the measured work ahead of it and its own "
        "would finish within this share of REQUEST_TIMEOUT_S (the rest absorbs what the "
        "inference estimate leaves out: reading, decoding, encoding); an idle model takes "
        "any request",
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="a request not answered by then gets 504 (its deadline)"
    )

    # Images
    max_body_bytes: int = Field(
        25 * 1024 * 1024, ge=1, description="a larger request body gets 413"
    )
    max_pixels: int = Field(
        40_000_000, ge=1, description="an image with more pixels gets 413 (from its header)"
    )
    tile_size: int | None = Field(None, ge=16, description="default: the card's recommended_tile")
    tile_overlap: int | None = Field(
        None,
        ge=0,
        description="pixels shared by neighbouring tiles (default: the card's tile_overlap, "
        "twice the model's measured receptive field plus a margin; 32 without one)",
    )
    bucket_multiple: int = Field(32, ge=1, description="pad H, W up to a multiple of this")
    warmup_sizes: list[int] = Field(
        [224], description="square image sides run once per model before readiness"
    )
    codec_threads: int = Field(4, ge=1, description="decode/encode worker threads")
    jpeg_quality: int = Field(95, ge=1, le=100, description="JPEG/WebP answers without ?quality=")
    suspicion_fpr: Literal["0.01", "0.05"] = Field(
        "0.01",
        description="false-positive rate of the suspicion verdict (X-Purifier-Suspicious): "
        "which of the card's thresholds, calibrated on held-out clean images, is used",
    )

    # Stochastic models (a `noise` input): keyed noise
    noise_key: SecretStr | None = Field(
        None,
        description="the secret that keys stochastic models' noise (HMAC-SHA256 of the "
        "decoded pixels): replicas sharing it answer the same photo alike; at least 16 "
        "bytes. Unset (and no NOISE_KEY_FILE): a random key per process",
    )
    noise_key_file: Path | None = Field(
        None,
        description="read the noise key from this file (a mounted Kubernetes Secret); "
        "surrounding whitespace is ignored",
    )
    allow_client_noise: bool = Field(
        False,
        description="let /v2 infer callers send the `noise` input themselves (evaluation "
        "only: whoever chooses the noise can attack through it)",
    )

    # Proxy mode (issue 39): purify on the way to the user's own model server
    upstream_url: str | None = Field(
        None,
        description="an Open Inference Protocol server (http://host:port): POST "
        "/v2/models/{name}/infer for a model not served here is purified and forwarded "
        "there; its metadata and ready routes report both sides",
    )
    upstream_image_inputs: list[str] | None = Field(
        None,
        description="the request inputs to purify (default: every input of an image's "
        "form: UINT8 NHWC, FP32 NCHW in [0, 1], BYTES of encoded images)",
    )
    upstream_purifier: str | None = Field(
        None, description="the model that purifies proxied requests (default: the default model)"
    )
    upstream_max_connections: int = Field(
        64, ge=1, description="pooled connections to the upstream (keep-alive)"
    )
    upstream_connect_timeout_s: float = Field(
        2.0, gt=0, description="connecting to the upstream; beyond: 502"
    )

    # HTTP and security
    api_key: SecretStr | None = Field(
        None,
        description="when set, every route but the health probes and the page at / needs "
        "`Authorization: Bearer KEY` or `X-API-Key: KEY` (401 otherwise)",
    )
    cors_origins: list[str] = Field(
        [], description="origins allowed to call from a browser; empty = CORS off"
    )
    max_concurrent_requests: int = Field(
        256, ge=1, description="work requests (/purify, infer) in flight; beyond: 503"
    )
    body_timeout_s: float = Field(
        10.0, gt=0, description="a request body that takes longer to arrive gets 408"
    )
    exit_on_model_error: bool = Field(
        True,
        description="a model that fails to load stops start-up; false: serve the others "
        "and report the broken one in /models and its ready route",
    )
    shutdown_drain_s: float = Field(
        0.0, ge=0, description="after SIGTERM, answer not-ready this long before stopping"
    )
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8080, description="port to listen on")
