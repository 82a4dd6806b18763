# strata: see README.md.
GO       ?= go
BIN      := bin
DATA     ?= $(CURDIR)/var
# Debian's python3 first: libnbd's Python module (nbdsh) loads only there.
export PATH := /usr/bin:/usr/sbin:/sbin:$(PATH)

.PHONY: all build test test-deps bench bench-osimage bench-nbd run lint fuzz clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

test-deps:
	./scripts/test-deps.sh

## test: install what the tests need, then run every test (race detector on)
## and a short fuzz run of the parsers that face untrusted input.
test: test-deps lint
	$(GO) test -race -timeout 14m ./...
	$(MAKE) fuzz

## fuzz: fuzz the NBD option/request parsers, the image file readers and
## the chunk encoder (every frame must decode to its input). Each target
## runs a fixed number of executions, 10-15 s each on this machine, or
## FUZZTIME each (a duration like 60s, or a count like 1000000x). A
## duration can fail a clean run with "context deadline exceeded" when it
## ends while a worker is busy, a race in Go 1.26's fuzz coordinator
## (golang/go#75804, fixed in Go 1.27; seen here on a loaded machine);
## counts have no deadline. Minimizing is cut to one try so that a large
## new input does not stall a short run.
fuzz:
	$(GO) test ./nbd -run '^$$' -fuzz '^FuzzOptions$$' -fuzztime $(or $(FUZZTIME),150000x) -fuzzminimizetime 1x
	$(GO) test ./nbd -run '^$$' -fuzz '^FuzzRequests$$' -fuzztime $(or $(FUZZTIME),100000x) -fuzzminimizetime 1x
	$(GO) test ./layer/imagefile -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(or $(FUZZTIME),150000x) -fuzzminimizetime 1x
	$(GO) test ./storage/smallzstd -run '^$$' -fuzz '^FuzzFrames$$' -fuzztime $(or $(FUZZTIME),400000x) -fuzzminimizetime 1x

## bench: Go benchmarks of the data path.
bench:
	$(GO) test -run '^$$' -bench . -skip OSImage -benchmem ./storage/ ./layer/...
	$(GO) test -run '^$$' -bench QD -benchmem ./nbd/

## bench-osimage: import an ext4 image of this machine's OS files (about 4 minutes).
bench-osimage:
	$(GO) test -run '^$$' -bench BenchmarkImportOSImage -benchtime 3x -timeout 30m ./storage/

## bench-nbd: strata vs qemu-nbd over NBD, same run (issue 3);
## ARGS="--size 256M --runtime 3s" for a quick run.
bench-nbd:
	./scripts/bench-nbd.sh $(ARGS)

## run: start the daemon on embedded defaults (data and sockets under ./var).
run: build
	$(BIN)/stratad --data-dir $(DATA)

## lint: gofmt, go vet and staticcheck (pinned; the module proxy serves
## this version).
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.6.1
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

clean:
	rm -rf $(BIN)
