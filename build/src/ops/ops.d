build/src/ops/ops.o: src/ops/ops.c src/ops/ops.h \
 src/ops/../model/config.h src/ops/../model/../util/err.h \
 src/ops/../util/blas.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h
src/ops/ops.h:
src/ops/../model/config.h:
src/ops/../model/../util/err.h:
src/ops/../util/blas.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h:
