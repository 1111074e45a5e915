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

demo: install
	$(BIN)/fixloop example --out $(EXAMPLE)
	$(BIN)/fixloop check $(EXAMPLE)/candidate.png --source $(EXAMPLE)/source.png \
		--mask $(EXAMPLE)/mask.png --out $(EXAMPLE)/report; \
		status=$$?; echo "exit code $$status (1 = defects found, as expected for this example)"; \
		test $$status -eq 1

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m bench.checks_speed

clean:
	rm -rf $(VENV) $(EXAMPLE) .pytest_cache
