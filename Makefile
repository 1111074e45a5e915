# fixloop: two commands on a fresh machine.
#   make demo   set up .venv and run the main job on the shipped example
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXAMPLE := examples/out

.PHONY: demo test bench install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -c "import cv2, mediapipe, skimage, dlib, onnxruntime; print('installed: OpenCV', cv2.__version__)"
	touch $@

# The main job: build the example (an edit that spilled outside its mask, got darker and warmer),
# then repair it in the checked loop with the offline local backend. Exit 0 = no P0/P1 left.
demo: install
	$(BIN)/fixloop example --out $(EXAMPLE)
	rm -rf $(EXAMPLE)/run
	FIXLOOP_HOME=$(EXAMPLE)/.fixloop $(BIN)/fixloop repair $(EXAMPLE)/candidate.png \
		--source $(EXAMPLE)/source.png --mask $(EXAMPLE)/mask.png --backend local --out $(EXAMPLE)/run
	@echo "review sheet: $(EXAMPLE)/run/review.png   report: $(EXAMPLE)/run/report.json"

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m bench.checks_speed
	$(BIN)/python -m bench.loop_overhead

clean:
	rm -rf $(VENV) $(EXAMPLE) .pytest_cache
