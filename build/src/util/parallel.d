build/src/util/parallel.o: src/util/parallel.c src/util/parallel.h
src/util/parallel.h:
