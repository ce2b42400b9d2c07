// A WASI preview1 command for the preview1 host's tests: what wasi-libc programs do
// with files, directories, links, clocks and random bytes. argv[1] picks the mode;
// every step prints one line, errors as "<step>: <strerror>".
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int fails(const char *step, int rc) {
  if (rc < 0) printf("%s: %s\n", step, strerror(errno));
  return rc < 0;
}

static void expect_error(const char *step, int rc) {
  if (rc < 0) printf("%s: %s\n", step, strerror(errno));
  else printf("%s: succeeded\n", step);
}

static const char *type_name(unsigned char t) {
  switch (t) {
    case DT_REG: return "file";
    case DT_DIR: return "dir";
    case DT_LNK: return "link";
    default: return "other";
  }
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

// files: create, write, seek, read, pread/pwrite, truncate, append, stat, rename, unlink.
static int files(void) {
  char buf[64];
  int fd = open("/work/a.txt", O_CREAT | O_EXCL | O_RDWR, 0644);
  if (fails("create", fd)) return 1;
  if (fails("write", write(fd, "hello world", 11))) return 1;
  printf("tell %ld\n", (long)lseek(fd, 0, SEEK_CUR));
  printf("seek %ld\n", (long)lseek(fd, 6, SEEK_SET));
  ssize_t n = read(fd, buf, sizeof buf);
  printf("read %.*s\n", (int)n, buf);
  if (fails("pwrite", pwrite(fd, "J", 1, 0))) return 1;
  n = pread(fd, buf, 5, 0);
  printf("pread %.*s, offset still %ld\n", (int)n, buf, (long)lseek(fd, 0, SEEK_CUR));
  if (fails("ftruncate", ftruncate(fd, 5))) return 1;
  struct stat st;
  if (fails("fstat", fstat(fd, &st))) return 1;
  printf("size %lld regular %d\n", (long long)st.st_size, S_ISREG(st.st_mode));
  close(fd);
  expect_error("create again", open("/work/a.txt", O_CREAT | O_EXCL | O_WRONLY, 0644));
  fd = open("/work/a.txt", O_WRONLY | O_APPEND);
  if (fails("open append", fd)) return 1;
  lseek(fd, 0, SEEK_SET);
  write(fd, "!", 1);
  close(fd);
  fd = open("/work/a.txt", O_RDONLY);
  n = read(fd, buf, sizeof buf);
  printf("content %.*s\n", (int)n, buf);
  expect_error("write read-only", write(fd, "x", 1));
  close(fd);
  if (fails("rename", rename("/work/a.txt", "/work/b.txt"))) return 1;
  expect_error("stat old name", stat("/work/a.txt", &st));
  if (fails("stat new name", stat("/work/b.txt", &st))) return 1;
  printf("renamed size %lld\n", (long long)st.st_size);
  fd = open("/work/b.txt", O_WRONLY | O_TRUNC);
  fstat(fd, &st);
  printf("truncated size %lld\n", (long long)st.st_size);
  close(fd);
  if (fails("mkdir", mkdir("/work/sub", 0755))) return 1;
  expect_error("mkdir again", mkdir("/work/sub", 0755));
  if (fails("stat dir", stat("/work/sub", &st))) return 1;
  printf("dir %d\n", S_ISDIR(st.st_mode));
  fd = open("/work/sub/inner", O_CREAT | O_WRONLY, 0644);
  close(fd);
  expect_error("rmdir non-empty", rmdir("/work/sub"));
  expect_error("unlink dir", unlink("/work/sub"));
  expect_error("open dir for writing", open("/work/sub", O_WRONLY));
  expect_error("file as dir", open("/work/b.txt/x", O_RDONLY));
  expect_error("missing", open("/work/nope", O_RDONLY));
  expect_error("rmdir file", rmdir("/work/b.txt"));
  if (fails("unlink inner", unlink("/work/sub/inner"))) return 1;
  if (fails("rmdir", rmdir("/work/sub"))) return 1;
  if (fails("unlink", unlink("/work/b.txt"))) return 1;
  expect_error("unlink again", unlink("/work/b.txt"));
  if (fails("chdir", chdir("/work"))) return 1;
  fd = open("rel.txt", O_CREAT | O_WRONLY, 0644);
  close(fd);
  printf("relative exists %d\n", access("/work/rel.txt", F_OK) == 0);
  unlink("rel.txt");
  return 0;
}

// readdir: lists a directory whole (sorted), going through wasi-libc's cookies.
static int list(const char *path) {
  DIR *dir = opendir(path);
  if (!dir) {
    printf("opendir: %s\n", strerror(errno));
    return 1;
  }
  char **names = NULL;
  size_t count = 0;
  struct dirent *e;
  while ((e = readdir(dir))) {
    names = realloc(names, (count + 1) * sizeof *names);
    char line[512];
    snprintf(line, sizeof line, "%s %s%s", e->d_name, type_name(e->d_type),
             e->d_ino == 0 ? " no-inode" : "");
    names[count++] = strdup(line);
  }
  closedir(dir);
  qsort(names, count, sizeof *names, by_name);
  printf("%zu entries\n", count);
  for (size_t i = 0; i < count; i++) printf("%s\n", names[i]);
  return 0;
}

// links: symlinks, readlink, lstat vs stat, hard links.
static int links(void) {
  struct stat st;
  int fd = open("/work/target.txt", O_CREAT | O_WRONLY, 0644);
  write(fd, "target", 6);
  close(fd);
  if (fails("symlink", symlink("target.txt", "/work/link"))) return 1;
  char buf[64];
  ssize_t n = readlink("/work/link", buf, sizeof buf);
  printf("readlink %.*s\n", (int)n, buf);
  lstat("/work/link", &st);
  printf("lstat link %d\n", S_ISLNK(st.st_mode));
  stat("/work/link", &st);
  printf("stat follows %d size %lld\n", S_ISREG(st.st_mode), (long long)st.st_size);
  expect_error("absolute symlink", symlink("/etc/passwd", "/work/abs"));
  expect_error("readlink a file", readlink("/work/target.txt", buf, sizeof buf));
  expect_error("open nofollow", open("/work/link", O_RDONLY | O_NOFOLLOW));
  if (fails("link", link("/work/target.txt", "/work/hard"))) return 1;
  stat("/work/target.txt", &st);
  printf("nlink %lu\n", (unsigned long)st.st_nlink);
  return 0;
}

// times: utimensat and futimens.
static int times(void) {
  struct stat st;
  int fd = open("/work/t.txt", O_CREAT | O_WRONLY, 0644);
  struct timespec ts[2] = {{1000000000, 0}, {1234567890, 500000000}};
  if (fails("futimens", futimens(fd, ts))) return 1;
  fstat(fd, &st);
  printf("atime %lld mtime %lld.%03ld\n", (long long)st.st_atim.tv_sec,
         (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec / 1000000);
  close(fd);
  struct timespec keep[2] = {{0, UTIME_OMIT}, {1500000000, 0}};
  if (fails("utimensat", utimensat(AT_FDCWD, "/work/t.txt", keep, 0))) return 1;
  stat("/work/t.txt", &st);
  printf("atime %lld mtime %lld\n", (long long)st.st_atim.tv_sec, (long long)st.st_mtim.tv_sec);
  return 0;
}

// clock: realtime, monotonic, a sleep, random bytes.
static int clocks(void) {
  struct timespec a, b, r;
  clock_gettime(CLOCK_REALTIME, &r);
  printf("realtime %lld\n", (long long)r.tv_sec);
  clock_gettime(CLOCK_MONOTONIC, &a);
  struct timespec nap = {0, 50 * 1000 * 1000};
  if (fails("nanosleep", nanosleep(&nap, NULL))) return 1;
  clock_gettime(CLOCK_MONOTONIC, &b);
  long long ms = (b.tv_sec - a.tv_sec) * 1000LL + (b.tv_nsec - a.tv_nsec) / 1000000;
  printf("slept at least 50 ms %d\n", ms >= 50);
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
  printf("cputime ok %d\n", a.tv_sec >= 0);
  unsigned char bytes[64] = {0};
  if (fails("getentropy", getentropy(bytes, sizeof bytes))) return 1;
  int nonzero = 0;
  for (size_t i = 0; i < sizeof bytes; i++) nonzero += bytes[i] != 0;
  printf("random %d\n", nonzero > 32);
  return 0;
}

// poll: stdin is ready at once; a timeout alone sleeps.
static int polls(void) {
  struct pollfd p = {.fd = 0, .events = POLLIN};
  printf("poll stdin %d revents %d\n", poll(&p, 1, 1000), p.revents & POLLIN);
  return 0;
}

// cat: prints a file (for escapes).
static int cat(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    printf("%s: %s\n", path, strerror(errno));
    return 1;
  }
  char buf[256];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
  fclose(f);
  return 0;
}

int main(int argc, char **argv) {
  const char *cmd = argc > 1 ? argv[1] : "";
  if (strcmp(cmd, "files") == 0) return files();
  if (strcmp(cmd, "list") == 0 && argc > 2) return list(argv[2]);
  if (strcmp(cmd, "links") == 0) return links();
  if (strcmp(cmd, "times") == 0) return times();
  if (strcmp(cmd, "clocks") == 0) return clocks();
  if (strcmp(cmd, "poll") == 0) return polls();
  if (strcmp(cmd, "cat") == 0 && argc > 2) return cat(argv[2]);
  fprintf(stderr, "fsops: unknown command %s\n", cmd);
  return 2;
}
