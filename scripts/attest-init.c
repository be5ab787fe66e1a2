// The /init of the attestation initrd (scripts/build-attest-initrd.sh), for
// scripts/hw-harness.sh's Linux guest rows on SEV-SNP and TDX hosts.
//
// As PID 1 in a confidential guest it mounts /dev, /proc, /sys and configfs, reads the
// nonce from the kernel command line (attest.nonce=<hex>, at most 64 bytes), asks the TEE
// for evidence through the kernel's configfs-tsm interface (Linux >= 6.7:
// /sys/kernel/config/tsm/report/<name>/{inblob,outblob,provider}) with the nonce as its
// report data, prints it on the console and ends the VM with a reboot (cvmm ends a
// confidential VM when it resets; reboot=k on the command line makes the reset an i8042
// one, which needs no ACPI). The lines are the demo
// guest's format, which hw-harness.sh parses:
//
//   attestation: provider sev_guest        (or tdx_guest)
//   attestation: report 0 <96 hex digits>  (a quote for tdx_guest: "attestation: quote 0 ...")
//   attestation: report 1 ...               (48 bytes a line, the last one shorter)
//   attestation: done
//
// or "attestation: error <what>: <why>" when something fails.
//
// For tests it also runs as an ordinary process: `init --tsm DIR --cmdline FILE` uses DIR
// in place of /sys/kernel/config/tsm/report and FILE in place of /proc/cmdline, mounts
// nothing and does not reboot; its exit status is 0 only after "attestation: done".

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

#define NONCE_MAX 64
#define EVIDENCE_MAX (1 << 20)
#define LINE_BYTES 48

static int fail(const char *what, const char *why) {
    printf("attestation: error %s: %s\n", what, why);
    fflush(stdout);
    return 1;
}

// Reads up to `cap` bytes of `path` into `buf`; returns the length or -1 (errno set).
static ssize_t read_file(const char *path, unsigned char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    while (len < cap) {
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    return (ssize_t)len;
}

static int write_file(const char *path, const unsigned char *buf, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, buf, len);
    int e = errno;
    close(fd);
    errno = e;
    return n == (ssize_t)len ? 0 : -1;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

// Finds attest.nonce=<hex> in the command line and decodes it into `nonce` (zero
// padded). Returns 0 (also when absent), or -1 for a malformed value.
static int parse_nonce(const char *cmdline, unsigned char nonce[NONCE_MAX]) {
    memset(nonce, 0, NONCE_MAX);
    const char *key = "attest.nonce=";
    const char *p = cmdline;
    while ((p = strstr(p, key)) != NULL) {
        if (p == cmdline || p[-1] == ' ')
            break;
        p += strlen(key);
    }
    if (p == NULL)
        return 0;
    p += strlen(key);
    size_t digits = strcspn(p, " \n");
    if (digits == 0 || digits % 2 != 0 || digits > 2 * NONCE_MAX)
        return -1;
    for (size_t i = 0; i < digits; i += 2) {
        int hi = hex_value(p[i]), lo = hex_value(p[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        nonce[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

static void print_hex(const unsigned char *buf, size_t len) {
    for (size_t i = 0; i < len; i++)
        printf("%02x", buf[i]);
}

// The whole exchange; returns 0 after printing "attestation: done".
static int attest(const char *tsm, const char *cmdline_path) {
    static unsigned char evidence[EVIDENCE_MAX];
    char cmdline[4096] = {0};
    if (read_file(cmdline_path, (unsigned char *)cmdline, sizeof(cmdline) - 1) < 0)
        return fail("cannot read the command line", strerror(errno));
    unsigned char nonce[NONCE_MAX];
    if (parse_nonce(cmdline, nonce) < 0)
        return fail("attest.nonce", "not an even number of hex digits (at most 128)");

    char entry[512], path[600];
    snprintf(entry, sizeof(entry), "%s/cvmm", tsm);
    if (mkdir(entry, 0700) < 0 && errno != EEXIST)
        return fail("cannot create a configfs-tsm report (needs CONFIG_TSM_REPORTS and a TEE guest driver)",
                    strerror(errno));

    char provider[64] = {0};
    snprintf(path, sizeof(path), "%s/provider", entry);
    if (read_file(path, (unsigned char *)provider, sizeof(provider) - 1) < 0)
        return fail("cannot read the provider", strerror(errno));
    provider[strcspn(provider, "\n")] = 0;
    const char *kind = strcmp(provider, "tdx_guest") == 0 ? "quote" : "report";

    snprintf(path, sizeof(path), "%s/inblob", entry);
    if (write_file(path, nonce, NONCE_MAX) < 0)
        return fail("cannot write the report data (inblob)", strerror(errno));
    snprintf(path, sizeof(path), "%s/outblob", entry);
    ssize_t len = read_file(path, evidence, sizeof(evidence));
    if (len < 0)
        return fail("the TEE gave no evidence (outblob)", strerror(errno));
    if (len == 0)
        return fail("the TEE gave no evidence (outblob)", "empty");

    printf("attestation: provider %s\n", provider);
    printf("attestation: report data ");
    print_hex(nonce, NONCE_MAX);
    printf("\n");
    for (ssize_t off = 0, line = 0; off < len; off += LINE_BYTES, line++) {
        size_t n = (size_t)(len - off) < LINE_BYTES ? (size_t)(len - off) : LINE_BYTES;
        printf("attestation: %s %zd ", kind, line);
        print_hex(evidence + off, n);
        printf("\n");
    }
    printf("attestation: done\n");
    fflush(stdout);
    rmdir(entry);
    return 0;
}

int main(int argc, char **argv) {
    if (getpid() != 1) {
        if (argc != 5 || strcmp(argv[1], "--tsm") != 0 || strcmp(argv[3], "--cmdline") != 0) {
            fprintf(stderr, "usage: %s --tsm DIR --cmdline FILE (as PID 1: no arguments)\n", argv[0]);
            return 2;
        }
        return attest(argv[2], argv[4]);
    }
    mkdir("/dev", 0755);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    int console = open("/dev/console", O_RDWR);
    if (console < 0)
        console = open("/dev/ttyS0", O_RDWR);
    if (console >= 0) {
        dup2(console, 0);
        dup2(console, 1);
        dup2(console, 2);
        if (console > 2)
            close(console);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    mkdir("/proc", 0755);
    mkdir("/sys", 0755);
    mount("proc", "/proc", "proc", 0, NULL);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    mount("configfs", "/sys/kernel/config", "configfs", 0, NULL);
    attest("/sys/kernel/config/tsm/report", "/proc/cmdline");
    sync();
    reboot(RB_AUTOBOOT);
    return 0;
}
