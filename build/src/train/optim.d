build/src/train/optim.o: src/train/optim.c src/train/optim.h \
 src/train/../model/params.h src/train/../model/../util/rng.h \
 src/train/../model/config.h src/train/../model/../util/err.h \
 src/train/../util/parallel.h
src/train/optim.h:
src/train/../model/params.h:
src/train/../model/../util/rng.h:
src/train/../model/config.h:
src/train/../model/../util/err.h:
src/train/../util/parallel.h:
