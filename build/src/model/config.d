build/src/model/config.o: src/model/config.c src/model/config.h \
 src/model/../util/err.h
src/model/config.h:
src/model/../util/err.h:
