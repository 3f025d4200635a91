build/src/backend/cpu.o: src/backend/cpu.c src/backend/../ops/ops.h \
 src/backend/../ops/../model/config.h \
 src/backend/../ops/../model/../util/err.h src/backend/../util/blas.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h \
 src/backend/../util/parallel.h src/backend/backend.h \
 src/backend/../model/params.h src/backend/../model/../util/rng.h \
 src/backend/../model/config.h src/backend/../util/err.h
src/backend/../ops/ops.h:
src/backend/../ops/../model/config.h:
src/backend/../ops/../model/../util/err.h:
src/backend/../util/blas.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h:
src/backend/../util/parallel.h:
src/backend/backend.h:
src/backend/../model/params.h:
src/backend/../model/../util/rng.h:
src/backend/../model/config.h:
src/backend/../util/err.h:
