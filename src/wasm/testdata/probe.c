// A WASI preview1 command for the guest runner's tests; argv[1] picks what it does.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
  const char *cmd = argc > 1 ? argv[1] : "hello";
  if (strcmp(cmd, "hello") == 0) {
    printf("hello from wasm\n");
    fprintf(stderr, "hello on stderr\n");
    return 0;
  }
  if (strcmp(cmd, "args") == 0) {
    for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
    return 0;
  }
  if (strcmp(cmd, "env") == 0) {
    for (char **e = environ; *e; e++) printf("%s\n", *e);
    return 0;
  }
  if (strcmp(cmd, "cat") == 0 && argc > 2) {
    FILE *f = fopen(argv[2], "r");
    if (!f) {
      perror(argv[2]);
      return 1;
    }
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
    fclose(f);
    return 0;
  }
  if (strcmp(cmd, "stdin") == 0) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) fwrite(buf, 1, n, stdout);
    return 0;
  }
  if (strcmp(cmd, "exit") == 0 && argc > 2) return atoi(argv[2]);
  if (strcmp(cmd, "sleep") == 0 && argc > 2) {
    printf("sleeping\n");
    fflush(stdout);
    sleep(atoi(argv[2]));
    return 0;
  }
  if (strcmp(cmd, "loop") == 0) {
    printf("looping\n");
    fflush(stdout);
    volatile unsigned long n = 0;
    for (;;) n++;
  }
  if (strcmp(cmd, "trap") == 0) {
    printf("before trap\n");
    fflush(stdout);
    __builtin_trap();
  }
  if (strcmp(cmd, "cwd") == 0) {
    char buf[1024];
    printf("%s\n", getcwd(buf, sizeof buf) ? buf : "?");
    return 0;
  }
  fprintf(stderr, "probe: unknown command %s\n", cmd);
  return 2;
}
