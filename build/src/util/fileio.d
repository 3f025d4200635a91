build/src/util/fileio.o: src/util/fileio.c src/util/fileio.h \
 src/util/err.h
src/util/fileio.h:
src/util/err.h:
