build/src/model/params.o: src/model/params.c src/model/params.h \
 src/model/../util/rng.h src/model/config.h src/model/../util/err.h
src/model/params.h:
src/model/../util/rng.h:
src/model/config.h:
src/model/../util/err.h:
