/*
 * A stand-in libnvidia-ml.so.1 for tests: the real pynvml loads it (through LD_LIBRARY_PATH) and calls it
 * exactly as it calls NVIDIA's library, so gpufit's whole NVML path -- pynvml's ctypes layer, versioned
 * structs, return codes, missing symbols -- runs without a GPU.
 *
 * What it serves is a device table: a text file named by FAKENVML_TABLE, read at nvmlInit (made from an
 * nvidia-smi capture by tests/fakenvml_c/table.py). One table serves any number of test processes from one
 * build, so the library is compiled once per test session (twice: the current and the old-driver variant).
 *
 * Table format, one `key<TAB>value` per line ('#' starts a comment):
 *   system keys first (driver_version, nvml_version, cuda_driver_version),
 *   then `gpu<TAB>N` opens GPU N and the keys after it are that GPU's,
 *   `mig<TAB>N` opens MIG device N of the current GPU (its keys until the next gpu/mig line).
 * A key that is absent answers NVML_ERROR_NOT_SUPPORTED from the call that would return it; a value
 * `!NAME` (e.g. `!NO_PERMISSION`, `!GPU_IS_LOST`) answers that NVML error instead.
 *
 * Faults, chosen by environment variables:
 *   FAKENVML_INIT_ERROR=NAME   nvmlInit* returns NVML_ERROR_NAME (DRIVER_NOT_LOADED, LIB_RM_VERSION_MISMATCH,
 *                              NO_PERMISSION, ... or a number)
 *   FAKENVML_LOST=1,3          every device call on these GPU indexes returns NVML_ERROR_GPU_IS_LOST
 *   FAKENVML_HANG=FUNC         FUNC (a C symbol, e.g. nvmlDeviceGetName) never returns: a wedged driver
 *   FAKENVML_ERRORS=FUNC=NAME,...  FUNC returns NVML_ERROR_NAME on every call
 *   FAKENVML_CALL_LOG=FILE     each call's symbol is appended to FILE (one line each)
 *
 * Build: cc -shared -fPIC -o libnvidia-ml.so.1 fakenvml.c        (a driver of the R535+ era)
 *        cc -shared -fPIC -DOLD_DRIVER -o libnvidia-ml.so.1 fakenvml.c
 *   OLD_DRIVER leaves out the symbols an R470 driver does not export (nvmlDeviceGetMemoryInfo_v2 and the
 *   _v3 process lists came with R510, nvmlDeviceGetCurrentClocksEventReasons with R535), so the callers'
 *   fallbacks run.
 *
 * Signatures, struct layouts, buffer sizes and return codes follow NVIDIA's nvml.h (the header is not
 * needed to build: the few types used are declared here with the same layout).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* ---- nvml.h: return codes ------------------------------------------------------------------------- */
typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_ALREADY_INITIALIZED = 5,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_INSUFFICIENT_POWER = 8,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_IRQ_ISSUE = 11,
    NVML_ERROR_LIBRARY_NOT_FOUND = 12,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_CORRUPTED_INFOROM = 14,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_RESET_REQUIRED = 16,
    NVML_ERROR_OPERATING_SYSTEM = 17,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
    NVML_ERROR_IN_USE = 19,
    NVML_ERROR_MEMORY = 20,
    NVML_ERROR_NO_DATA = 21,
    NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22,
    NVML_ERROR_INSUFFICIENT_RESOURCES = 23,
    NVML_ERROR_FREQ_NOT_SUPPORTED = 24,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_DEPRECATED = 26,
    NVML_ERROR_NOT_READY = 27,
    NVML_ERROR_GPU_NOT_FOUND = 28,
    NVML_ERROR_INVALID_STATE = 29,
    NVML_ERROR_UNKNOWN = 999,
};

static const struct { const char *name; int code; const char *text; } ERRORS[] = {
    {"SUCCESS", NVML_SUCCESS, "Success"},
    {"UNINITIALIZED", NVML_ERROR_UNINITIALIZED, "Uninitialized"},
    {"INVALID_ARGUMENT", NVML_ERROR_INVALID_ARGUMENT, "Invalid Argument"},
    {"NOT_SUPPORTED", NVML_ERROR_NOT_SUPPORTED, "Not Supported"},
    {"NO_PERMISSION", NVML_ERROR_NO_PERMISSION, "Insufficient Permissions"},
    {"ALREADY_INITIALIZED", NVML_ERROR_ALREADY_INITIALIZED, "Already Initialized"},
    {"NOT_FOUND", NVML_ERROR_NOT_FOUND, "Not Found"},
    {"INSUFFICIENT_SIZE", NVML_ERROR_INSUFFICIENT_SIZE, "Insufficient Size"},
    {"INSUFFICIENT_POWER", NVML_ERROR_INSUFFICIENT_POWER, "Insufficient External Power"},
    {"DRIVER_NOT_LOADED", NVML_ERROR_DRIVER_NOT_LOADED, "Driver Not Loaded"},
    {"TIMEOUT", NVML_ERROR_TIMEOUT, "Timeout"},
    {"IRQ_ISSUE", NVML_ERROR_IRQ_ISSUE, "Interrupt Request Issue"},
    {"LIBRARY_NOT_FOUND", NVML_ERROR_LIBRARY_NOT_FOUND, "NVML Shared Library Not Found"},
    {"FUNCTION_NOT_FOUND", NVML_ERROR_FUNCTION_NOT_FOUND, "Function Not Found"},
    {"CORRUPTED_INFOROM", NVML_ERROR_CORRUPTED_INFOROM, "Corrupted infoROM"},
    {"GPU_IS_LOST", NVML_ERROR_GPU_IS_LOST, "GPU is lost"},
    {"RESET_REQUIRED", NVML_ERROR_RESET_REQUIRED, "GPU requires restart"},
    {"OPERATING_SYSTEM", NVML_ERROR_OPERATING_SYSTEM, "The operating system has blocked the request."},
    {"LIB_RM_VERSION_MISMATCH", NVML_ERROR_LIB_RM_VERSION_MISMATCH, "RM has detected an NVML/RM version mismatch."},
    {"IN_USE", NVML_ERROR_IN_USE, "In use by another client"},
    {"MEMORY", NVML_ERROR_MEMORY, "Insufficient Memory"},
    {"NO_DATA", NVML_ERROR_NO_DATA, "No data"},
    {"VGPU_ECC_NOT_SUPPORTED", NVML_ERROR_VGPU_ECC_NOT_SUPPORTED, "ECC is not supported on vGPU"},
    {"INSUFFICIENT_RESOURCES", NVML_ERROR_INSUFFICIENT_RESOURCES, "Insufficient resources"},
    {"FREQ_NOT_SUPPORTED", NVML_ERROR_FREQ_NOT_SUPPORTED, "Frequency not supported"},
    {"ARGUMENT_VERSION_MISMATCH", NVML_ERROR_ARGUMENT_VERSION_MISMATCH, "Version mismatch"},
    {"DEPRECATED", NVML_ERROR_DEPRECATED, "Deprecated"},
    {"NOT_READY", NVML_ERROR_NOT_READY, "Not ready"},
    {"GPU_NOT_FOUND", NVML_ERROR_GPU_NOT_FOUND, "GPU not found"},
    {"INVALID_STATE", NVML_ERROR_INVALID_STATE, "Invalid state"},
    {"UNKNOWN", NVML_ERROR_UNKNOWN, "Unknown Error"},
};

/* ---- nvml.h: types and sizes ---------------------------------------------------------------------- */
#define NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE 32
#define NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE 16
#define NVML_VALUE_NOT_AVAILABLE (~0ULL)
#define NVML_PSTATE_UNKNOWN 32
#define NVML_CLOCK_COUNT 4 /* GRAPHICS, SM, MEM, VIDEO */
#define NVML_CLOCK_SM 1
#define NVML_CLOCK_MEM 2
#define NVML_TEMPERATURE_GPU 0
#define NVML_NVLINK_MAX_LINKS 18
#define NVML_STRUCT_VERSION(size, ver) ((unsigned int)(size) | ((unsigned int)(ver) << 24U))

typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
#define nvmlMemory_v2 NVML_STRUCT_VERSION(sizeof(nvmlMemory_v2_t), 2)

typedef struct {
    char busIdLegacy[NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE];
} nvmlPciInfo_t;

typedef struct {
    unsigned int gpu, memory;
} nvmlUtilization_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
} nvmlProcessInfo_v1_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_v2_t; /* nvmlProcessInfo_t (the _v3 calls) has the same layout */

typedef struct {
    unsigned int multiprocessorCount, sharedCopyEngineCount, sharedDecoderCount, sharedEncoderCount,
        sharedJpegCount, sharedOfaCount, gpuInstanceSliceCount, computeInstanceSliceCount;
    unsigned long long memorySizeMB;
} nvmlDeviceAttributes_t;

typedef unsigned int nvmlEnableState_t;

/* ---- the device table ----------------------------------------------------------------------------- */
#define MAX_GPUS 64
#define MAX_MIG 8
#define MAX_KEYS 160

struct kv {
    char *key, *value;
};

typedef struct fdev {
    int index;  /* GPU index, or MIG slot */
    int is_mig;
    struct fdev *parent;
    int nkeys;
    struct kv keys[MAX_KEYS];
    int nmig;
    struct fdev *mig[MAX_MIG];
} fdev;
typedef fdev *nvmlDevice_t;

static fdev gpus[MAX_GPUS];
static fdev migs[MAX_GPUS][MAX_MIG];
static int ngpus;
static struct kv system_keys[MAX_KEYS];
static int nsystem;
static int refcount;
static char *table_text;

static int error_code(const char *name) {
    if (!name || !*name) return -1;
    char *end;
    long n = strtol(name, &end, 10);
    if (*end == 0) return (int)n;
    if (strncasecmp(name, "NVML_ERROR_", 11) == 0) name += 11;
    for (size_t i = 0; i < sizeof ERRORS / sizeof ERRORS[0]; i++)
        if (strcasecmp(ERRORS[i].name, name) == 0) return ERRORS[i].code;
    return -1;
}

static void log_call(const char *fn) {
    const char *path = getenv("FAKENVML_CALL_LOG");
    if (!path || !*path) return;
    FILE *f = fopen(path, "a");
    if (f) {
        fprintf(f, "%s\n", fn);
        fclose(f);
    }
}

/* FAKENVML_HANG / FAKENVML_ERRORS for this function; -1 when neither applies */
static int forced(const char *fn) {
    log_call(fn);
    const char *hang = getenv("FAKENVML_HANG");
    if (hang && strcmp(hang, fn) == 0)
        for (;;) pause(); /* a wedged driver call: only the process ending stops it */
    const char *spec = getenv("FAKENVML_ERRORS");
    if (!spec) return -1;
    size_t n = strlen(fn);
    for (const char *p = spec; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len > n && strncmp(p, fn, n) == 0 && p[n] == '=') {
            char name[64] = {0};
            size_t vl = len - n - 1 < sizeof name - 1 ? len - n - 1 : sizeof name - 1;
            memcpy(name, p + n + 1, vl);
            int code = error_code(name);
            return code < 0 ? NVML_ERROR_UNKNOWN : code;
        }
        p = comma ? comma + 1 : NULL;
    }
    return -1;
}

static int in_list(const char *spec, int index) {
    for (const char *p = spec; p && *p;) {
        char *end;
        long n = strtol(p, &end, 10);
        if (end != p && n == index) return 1;
        p = strchr(p, ',');
        if (p) p++;
    }
    return 0;
}

static const char *lookup(struct kv *keys, int n, const char *key) {
    const char *found = NULL;
    for (int i = 0; i < n; i++)
        if (strcmp(keys[i].key, key) == 0) found = keys[i].value; /* a later line overrides */
    return found;
}

/* The value of `key` on `d` as text: NVML_SUCCESS, NOT_SUPPORTED when absent, or the `!NAME` error. */
static nvmlReturn_t get_str(fdev *d, const char *key, const char **out) {
    const char *v = d ? lookup(d->keys, d->nkeys, key) : lookup(system_keys, nsystem, key);
    if (!v) return NVML_ERROR_NOT_SUPPORTED;
    if (v[0] == '!') {
        int code = error_code(v + 1);
        return code < 0 ? NVML_ERROR_UNKNOWN : code;
    }
    *out = v;
    return NVML_SUCCESS;
}

static nvmlReturn_t get_ull(fdev *d, const char *key, unsigned long long *out) {
    const char *v;
    nvmlReturn_t r = get_str(d, key, &v);
    if (r != NVML_SUCCESS) return r;
    if (strcmp(v, "N/A") == 0) {
        *out = NVML_VALUE_NOT_AVAILABLE;
        return NVML_SUCCESS;
    }
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 0);
    if (errno || *end) {
        fprintf(stderr, "fakenvml: %s: not a number: %s\n", key, v);
        return NVML_ERROR_UNKNOWN;
    }
    *out = n;
    return NVML_SUCCESS;
}

static nvmlReturn_t get_uint(fdev *d, const char *key, unsigned int *out) {
    unsigned long long n;
    nvmlReturn_t r = get_ull(d, key, &n);
    if (r == NVML_SUCCESS) *out = (unsigned int)n;
    return r;
}

static nvmlReturn_t put_string(const char *s, char *buf, unsigned int length) {
    if (!buf) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(s) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(buf, s, strlen(s) + 1);
    return NVML_SUCCESS;
}

static void reset_table(void) {
    free(table_text);
    table_text = NULL;
    memset(gpus, 0, sizeof gpus);
    memset(migs, 0, sizeof migs);
    ngpus = nsystem = 0;
}

static int add_key(struct kv *keys, int *n, char *key, char *value, int lineno) {
    if (*n >= MAX_KEYS) {
        fprintf(stderr, "fakenvml: line %d: more than %d keys in one block\n", lineno, MAX_KEYS);
        return -1;
    }
    keys[*n].key = key;
    keys[*n].value = value;
    (*n)++;
    return 0;
}

static nvmlReturn_t load_table(void) {
    reset_table();
    const char *path = getenv("FAKENVML_TABLE");
    if (!path || !*path) return NVML_SUCCESS; /* a driver with no GPU */
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fakenvml: cannot open FAKENVML_TABLE %s: %s\n", path, strerror(errno));
        return NVML_ERROR_UNKNOWN;
    }
    size_t cap = 1 << 16, len = 0;
    table_text = malloc(cap);
    for (size_t got; table_text && (got = fread(table_text + len, 1, cap - len - 1, f)) > 0;) {
        len += got;
        if (len + 1 >= cap) table_text = realloc(table_text, cap *= 2);
    }
    fclose(f);
    if (!table_text) return NVML_ERROR_MEMORY;
    table_text[len] = 0;
    fdev *cur = NULL;
    int lineno = 0;
    for (char *line = table_text, *next; line && *line; line = next) {
        lineno++;
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        if (!*line || *line == '#') continue;
        char *tab = strchr(line, '\t');
        if (!tab) {
            fprintf(stderr, "fakenvml: %s line %d: no TAB between key and value\n", path, lineno);
            return NVML_ERROR_UNKNOWN;
        }
        *tab = 0;
        char *key = line, *value = tab + 1;
        if (strcmp(key, "gpu") == 0) {
            if (ngpus >= MAX_GPUS || atoi(value) != ngpus) {
                fprintf(stderr, "fakenvml: %s line %d: GPUs must be numbered 0.. in order (max %d)\n", path,
                        lineno, MAX_GPUS);
                return NVML_ERROR_UNKNOWN;
            }
            cur = &gpus[ngpus];
            cur->index = ngpus++;
        } else if (strcmp(key, "mig") == 0) {
            fdev *parent = cur && cur->is_mig ? cur->parent : cur;
            if (!parent || parent->nmig >= MAX_MIG) {
                fprintf(stderr, "fakenvml: %s line %d: mig outside a gpu block, or too many\n", path, lineno);
                return NVML_ERROR_UNKNOWN;
            }
            cur = &migs[parent->index][parent->nmig];
            cur->index = atoi(value);
            cur->is_mig = 1;
            cur->parent = parent;
            parent->mig[parent->nmig++] = cur;
        } else if (add_key(cur ? cur->keys : system_keys, cur ? &cur->nkeys : &nsystem, key, value, lineno)) {
            return NVML_ERROR_UNKNOWN;
        }
    }
    return NVML_SUCCESS;
}

static int valid_handle(nvmlDevice_t d) {
    for (int i = 0; i < ngpus; i++) {
        if (d == &gpus[i]) return 1;
        for (int j = 0; j < gpus[i].nmig; j++)
            if (d == gpus[i].mig[j]) return 1;
    }
    return 0;
}

/* Every device call starts here: initialised, forced faults, a real handle, not a lost GPU. */
#define ENTER_SYSTEM()                                        \
    do {                                                      \
        int f_ = forced(__func__);                            \
        if (f_ >= 0) return f_;                               \
        if (refcount <= 0) return NVML_ERROR_UNINITIALIZED;   \
    } while (0)

#define ENTER(d)                                                                     \
    do {                                                                             \
        ENTER_SYSTEM();                                                              \
        if (!valid_handle(d)) return NVML_ERROR_INVALID_ARGUMENT;                    \
        fdev *g_ = (d)->is_mig ? (d)->parent : (d);                                \
        if (in_list(getenv("FAKENVML_LOST"), g_->index)) return NVML_ERROR_GPU_IS_LOST; \
        if (lookup(g_->keys, g_->nkeys, "lost")) return NVML_ERROR_GPU_IS_LOST;      \
    } while (0)

#define CHECK(expr)                               \
    do {                                          \
        nvmlReturn_t r_ = (expr);                 \
        if (r_ != NVML_SUCCESS) return r_;        \
    } while (0)

/* ---- life cycle ----------------------------------------------------------------------------------- */
static nvmlReturn_t do_init(const char *fn) {
    int f = forced(fn);
    if (f >= 0) return f;
    int code = error_code(getenv("FAKENVML_INIT_ERROR"));
    if (code > 0) return code;
    if (refcount == 0) {
        nvmlReturn_t r = load_table();
        if (r != NVML_SUCCESS) return r;
    }
    refcount++;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    return do_init(__func__);
}
EXPORT nvmlReturn_t nvmlInit_v2(void) { return do_init(__func__); }
EXPORT nvmlReturn_t nvmlInit(void) { return do_init(__func__); }

EXPORT nvmlReturn_t nvmlShutdown(void) {
    ENTER_SYSTEM();
    if (--refcount == 0) reset_table();
    return NVML_SUCCESS;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    log_call(__func__);
    for (size_t i = 0; i < sizeof ERRORS / sizeof ERRORS[0]; i++)
        if (ERRORS[i].code == result) return ERRORS[i].text;
    return "Unknown Error";
}

/* ---- system --------------------------------------------------------------------------------------- */
EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    ENTER_SYSTEM();
    const char *v;
    CHECK(get_str(NULL, "driver_version", &v));
    return put_string(v, version, length);
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    ENTER_SYSTEM();
    const char *v;
    CHECK(get_str(NULL, "nvml_version", &v));
    return put_string(v, version, length);
}

static nvmlReturn_t cuda_version(int *v) {
    if (!v) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int n;
    CHECK(get_uint(NULL, "cuda_driver_version", &n));
    *v = (int)n;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion) {
    ENTER_SYSTEM();
    return cuda_version(cudaDriverVersion);
}
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion) {
    ENTER_SYSTEM();
    return cuda_version(cudaDriverVersion);
}

static nvmlReturn_t device_count(unsigned int *n) {
    if (!n) return NVML_ERROR_INVALID_ARGUMENT;
    *n = (unsigned int)ngpus;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
    ENTER_SYSTEM();
    return device_count(deviceCount);
}
EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount) {
    ENTER_SYSTEM();
    return device_count(deviceCount);
}

static nvmlReturn_t handle_by_index(unsigned int index, nvmlDevice_t *device_out) {
    if (!device_out || index >= (unsigned int)ngpus) return NVML_ERROR_INVALID_ARGUMENT;
    *device_out = &gpus[index];
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    ENTER_SYSTEM();
    return handle_by_index(index, device);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    ENTER_SYSTEM();
    return handle_by_index(index, device);
}

/* ---- identity ------------------------------------------------------------------------------------- */
static nvmlReturn_t string_field(nvmlDevice_t d, const char *key, char *buf, unsigned int length) {
    const char *v;
    CHECK(get_str(d, key, &v));
    return put_string(v, buf, length);
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    ENTER(device);
    return string_field(device, "name", name, length);
}
EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    ENTER(device);
    return string_field(device, "uuid", uuid, length);
}
EXPORT nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t device, char *serial, unsigned int length) {
    ENTER(device);
    if (device->is_mig) return NVML_ERROR_NOT_SUPPORTED;
    return string_field(device, "serial", serial, length);
}

static nvmlReturn_t pci_info(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    if (!pci) return NVML_ERROR_INVALID_ARGUMENT;
    const char *bus_id;
    CHECK(get_str(device, "pci.bus_id", &bus_id));
    unsigned int dev_id = 0, sub = 0;
    nvmlReturn_t r = get_uint(device, "pci.device_id", &dev_id);
    if (r != NVML_SUCCESS && r != NVML_ERROR_NOT_SUPPORTED) return r;
    get_uint(device, "pci.subsystem_id", &sub);
    memset(pci, 0, sizeof *pci);
    snprintf(pci->busId, sizeof pci->busId, "%s", bus_id);
    /* the legacy field holds the short form "0000:01:00.0" of the same address */
    const char *colon = strchr(bus_id, ':');
    const char *domain_end = colon ? colon : bus_id;
    size_t dlen = (size_t)(domain_end - bus_id);
    const char *short_dom = dlen > 4 ? domain_end - 4 : bus_id;
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%s", short_dom);
    unsigned int dom = 0, bus = 0, dev = 0, fn = 0;
    sscanf(bus_id, "%x:%x:%x.%x", &dom, &bus, &dev, &fn);
    pci->domain = dom;
    pci->bus = bus;
    pci->device = dev;
    pci->pciDeviceId = dev_id;
    pci->pciSubSystemId = sub;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    ENTER(device);
    return pci_info(device, pci);
}
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    ENTER(device);
    return pci_info(device, pci);
}

/* ---- memory --------------------------------------------------------------------------------------- */
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    ENTER(device);
    if (!memory) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlMemory_t m;
    CHECK(get_ull(device, "memory.total", &m.total));
    CHECK(get_ull(device, "memory.free", &m.free));
    CHECK(get_ull(device, "memory.used", &m.used));
    /* nvml.h: v1 `used` is "Sum of Reserved and Allocated device memory"; v2 splits the two */
    unsigned long long reserved;
    if (get_ull(device, "memory.reserved", &reserved) == NVML_SUCCESS) m.used += reserved;
    *memory = m;
    return NVML_SUCCESS;
}

#ifndef OLD_DRIVER
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    ENTER(device);
    if (!memory) return NVML_ERROR_INVALID_ARGUMENT;
    /* the driver refuses a struct whose version word is not the one it was built with */
    if (memory->version != nvmlMemory_v2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    nvmlMemory_v2_t m = {.version = memory->version};
    CHECK(get_ull(device, "memory.total", &m.total));
    CHECK(get_ull(device, "memory.reserved", &m.reserved));
    CHECK(get_ull(device, "memory.free", &m.free));
    CHECK(get_ull(device, "memory.used", &m.used));
    *memory = m;
    return NVML_SUCCESS;
}
#endif

/* ---- clocks, temperature, power, utilisation ------------------------------------------------------ */
static nvmlReturn_t clock_field(nvmlDevice_t device, const char *prefix, unsigned int type, unsigned int *clock) {
    if (!clock || type >= NVML_CLOCK_COUNT) return NVML_ERROR_INVALID_ARGUMENT;
    if (type != NVML_CLOCK_SM && type != NVML_CLOCK_MEM) return NVML_ERROR_NOT_SUPPORTED;
    char key[48];
    snprintf(key, sizeof key, "%s.%s", prefix, type == NVML_CLOCK_SM ? "sm" : "mem");
    return get_uint(device, key, clock);
}
EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, unsigned int type, unsigned int *clock) {
    ENTER(device);
    return clock_field(device, "clock", type, clock);
}
EXPORT nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, unsigned int type, unsigned int *clock) {
    ENTER(device);
    return clock_field(device, "clock_max", type, clock);
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, unsigned int sensorType, unsigned int *temp) {
    ENTER(device);
    if (!temp || sensorType != NVML_TEMPERATURE_GPU) return NVML_ERROR_INVALID_ARGUMENT;
    return get_uint(device, "temperature", temp);
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    ENTER(device);
    if (!power) return NVML_ERROR_INVALID_ARGUMENT;
    return get_uint(device, "power_mw", power);
}
EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
    ENTER(device);
    if (!limit) return NVML_ERROR_INVALID_ARGUMENT;
    return get_uint(device, "power_limit_mw", limit);
}

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    ENTER(device);
    if (!utilization) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlUtilization_t u;
    CHECK(get_uint(device, "util.gpu", &u.gpu));
    CHECK(get_uint(device, "util.memory", &u.memory));
    *utilization = u;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor) {
    ENTER(device);
    if (!major || !minor) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int ma, mi;
    CHECK(get_uint(device, "cc.major", &ma));
    CHECK(get_uint(device, "cc.minor", &mi));
    *major = (int)ma;
    *minor = (int)mi;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetCurrPcieLinkGeneration(nvmlDevice_t device, unsigned int *v) {
    ENTER(device);
    if (!v) return NVML_ERROR_INVALID_ARGUMENT;
    return get_uint(device, "pcie.gen", v);
}
EXPORT nvmlReturn_t nvmlDeviceGetCurrPcieLinkWidth(nvmlDevice_t device, unsigned int *v) {
    ENTER(device);
    if (!v) return NVML_ERROR_INVALID_ARGUMENT;
    return get_uint(device, "pcie.width", v);
}
EXPORT nvmlReturn_t nvmlDeviceGetMaxPcieLinkGeneration(nvmlDevice_t device, unsigned int *v) {
    ENTER(device);
    if (!v) return NVML_ERROR_INVALID_ARGUMENT;
    return get_uint(device, "pcie.gen_max", v);
}
EXPORT nvmlReturn_t nvmlDeviceGetMaxPcieLinkWidth(nvmlDevice_t device, unsigned int *v) {
    ENTER(device);
    if (!v) return NVML_ERROR_INVALID_ARGUMENT;
    return get_uint(device, "pcie.width_max", v);
}

static nvmlReturn_t throttle(nvmlDevice_t device, unsigned long long *reasons) {
    if (!reasons) return NVML_ERROR_INVALID_ARGUMENT;
    return get_ull(device, "throttle", reasons);
}
#ifndef OLD_DRIVER
EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device, unsigned long long *reasons) {
    ENTER(device);
    return throttle(device, reasons);
}
#endif
EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device, unsigned long long *reasons) {
    ENTER(device);
    return throttle(device, reasons);
}

EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t device, unsigned int *speed) {
    ENTER(device);
    if (!speed) return NVML_ERROR_INVALID_ARGUMENT;
    return get_uint(device, "fan", speed);
}

EXPORT nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t device, unsigned int *pState) {
    ENTER(device);
    if (!pState) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t r = get_uint(device, "pstate", pState);
    if (r == NVML_ERROR_NOT_SUPPORTED) { /* the driver answers "unknown" rather than failing */
        *pState = NVML_PSTATE_UNKNOWN;
        return NVML_SUCCESS;
    }
    return r;
}

/* ---- MIG ------------------------------------------------------------------------------------------ */
EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode, unsigned int *pendingMode) {
    ENTER(device);
    if (!currentMode || !pendingMode) return NVML_ERROR_INVALID_ARGUMENT;
    if (device->is_mig) return NVML_ERROR_NOT_SUPPORTED;
    unsigned int mode;
    CHECK(get_uint(device, "mig.mode", &mode));
    *currentMode = *pendingMode = mode;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
    ENTER(device);
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    if (device->is_mig) return NVML_ERROR_NOT_SUPPORTED;
    return get_uint(device, "mig.max_count", count);
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index, nvmlDevice_t *migDevice) {
    ENTER(device);
    if (!migDevice || device->is_mig) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int mode = 0, max = 0;
    CHECK(get_uint(device, "mig.mode", &mode));
    if (!mode) return NVML_ERROR_INVALID_ARGUMENT;  /* MIG not enabled */
    CHECK(get_uint(device, "mig.max_count", &max));
    if (index >= max) return NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < device->nmig; i++)
        if ((unsigned int)device->mig[i]->index == index) {
            *migDevice = device->mig[i];
            return NVML_SUCCESS;
        }
    return NVML_ERROR_NOT_FOUND; /* an empty slot */
}

EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *isMigDevice) {
    ENTER(device);
    if (!isMigDevice) return NVML_ERROR_INVALID_ARGUMENT;
    *isMigDevice = (unsigned int)device->is_mig;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice, nvmlDevice_t *device) {
    ENTER(migDevice);
    if (!device || !migDevice->is_mig) return NVML_ERROR_INVALID_ARGUMENT;
    *device = migDevice->parent;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id) {
    ENTER(device);
    if (!id) return NVML_ERROR_INVALID_ARGUMENT;
    if (!device->is_mig) return NVML_ERROR_NOT_SUPPORTED;
    return get_uint(device, "gpu_instance_id", id);
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id) {
    ENTER(device);
    if (!id) return NVML_ERROR_INVALID_ARGUMENT;
    if (!device->is_mig) return NVML_ERROR_NOT_SUPPORTED;
    return get_uint(device, "compute_instance_id", id);
}

EXPORT nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t device, nvmlDeviceAttributes_t *attributes) {
    ENTER(device);
    if (!attributes) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlDeviceAttributes_t a;
    memset(&a, 0, sizeof a);
    CHECK(get_uint(device, "multiprocessor_count", &a.multiprocessorCount));
    unsigned long long total;
    if (get_ull(device, "memory.total", &total) == NVML_SUCCESS) a.memorySizeMB = total >> 20;
    *attributes = a;
    return NVML_SUCCESS;
}

/* ---- NVLink --------------------------------------------------------------------------------------- */
static nvmlReturn_t nvlink_key(nvmlDevice_t device, unsigned int link, const char *what, unsigned int *out) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int count;
    CHECK(get_uint(device, "nvlink.count", &count)); /* absent: no NVLink on this card */
    if (link >= count || link >= NVML_NVLINK_MAX_LINKS) return NVML_ERROR_INVALID_ARGUMENT;
    char key[48];
    snprintf(key, sizeof key, "nvlink.%u.%s", link, what);
    return get_uint(device, key, out);
}
EXPORT nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link, nvmlEnableState_t *isActive) {
    ENTER(device);
    return nvlink_key(device, link, "up", isActive);
}
EXPORT nvmlReturn_t nvmlDeviceGetNvLinkVersion(nvmlDevice_t device, unsigned int link, unsigned int *version) {
    ENTER(device);
    return nvlink_key(device, link, "version", version);
}

/* ---- processes ------------------------------------------------------------------------------------ */
/* Table lines `process.compute<TAB>PID USED` (USED in bytes, or N/A); `processes.compute<TAB>!NAME` makes
   the list call fail. The NVML protocol: a count too small
   for the list answers INSUFFICIENT_SIZE with the count needed; an empty list with count 0 is SUCCESS. */
static nvmlReturn_t processes(nvmlDevice_t device, const char *kind, unsigned int *count, void *infos, size_t size) {
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    const char *support;
    char key[48];
    snprintf(key, sizeof key, "processes.%s", kind);
    nvmlReturn_t r = get_str(device, key, &support); /* `!NAME` fails the whole list (e.g. NO_PERMISSION) */
    if (r != NVML_SUCCESS && r != NVML_ERROR_NOT_SUPPORTED) return r;
    snprintf(key, sizeof key, "process.%s", kind);
    unsigned int n = 0;
    for (int i = 0; i < device->nkeys; i++)
        if (strcmp(device->keys[i].key, key) == 0) n++;
    if (*count < n || (n && !infos)) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    unsigned int j = 0;
    for (int i = 0; i < device->nkeys; i++) {
        if (strcmp(device->keys[i].key, key) != 0) continue;
        const char *v = device->keys[i].value;
        char *end;
        unsigned int pid = (unsigned int)strtoul(v, &end, 10);
        while (*end == ' ') end++;
        unsigned long long used = strcmp(end, "N/A") == 0 ? NVML_VALUE_NOT_AVAILABLE : strtoull(end, NULL, 10);
        char *slot = (char *)infos + (size_t)j * size;
        if (size == sizeof(nvmlProcessInfo_v1_t)) {
            nvmlProcessInfo_v1_t p = {pid, used};
            memcpy(slot, &p, sizeof p);
        } else {
            unsigned int gi = 0xFFFFFFFF, ci = 0xFFFFFFFF; /* not in a MIG instance */
            nvmlProcessInfo_v2_t p = {pid, used, gi, ci};
            memcpy(slot, &p, sizeof p);
        }
        j++;
    }
    *count = n;
    return NVML_SUCCESS;
}

#ifndef OLD_DRIVER
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount, nvmlProcessInfo_v2_t *infos) {
    ENTER(device);
    return processes(device, "compute", infoCount, infos, sizeof(nvmlProcessInfo_v2_t));
}
EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount, nvmlProcessInfo_v2_t *infos) {
    ENTER(device);
    return processes(device, "graphics", infoCount, infos, sizeof(nvmlProcessInfo_v2_t));
}
#endif
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *infoCount, nvmlProcessInfo_v2_t *infos) {
    ENTER(device);
    return processes(device, "compute", infoCount, infos, sizeof(nvmlProcessInfo_v2_t));
}
EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t device, unsigned int *infoCount, nvmlProcessInfo_v2_t *infos) {
    ENTER(device);
    return processes(device, "graphics", infoCount, infos, sizeof(nvmlProcessInfo_v2_t));
}
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int *infoCount, nvmlProcessInfo_v1_t *infos) {
    ENTER(device);
    return processes(device, "compute", infoCount, infos, sizeof(nvmlProcessInfo_v1_t));
}
EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses(nvmlDevice_t device, unsigned int *infoCount, nvmlProcessInfo_v1_t *infos) {
    ENTER(device);
    return processes(device, "graphics", infoCount, infos, sizeof(nvmlProcessInfo_v1_t));
}

/* ---- ECC, retired pages, remapped rows ------------------------------------------------------------ */
EXPORT nvmlReturn_t nvmlDeviceGetEccMode(nvmlDevice_t device, nvmlEnableState_t *current, nvmlEnableState_t *pending) {
    ENTER(device);
    if (!current || !pending) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int mode;
    CHECK(get_uint(device, "ecc.mode", &mode));
    *current = *pending = mode;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, unsigned int errorType, unsigned int counterType, unsigned long long *eccCounts) {
    ENTER(device);
    if (!eccCounts || errorType > 1 || counterType > 1) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int mode = 0;
    CHECK(get_uint(device, "ecc.mode", &mode));
    if (!mode) return NVML_ERROR_NOT_SUPPORTED; /* counters are not kept with ECC off */
    char key[64];
    snprintf(key, sizeof key, "ecc.%s.%s", counterType ? "aggregate" : "volatile",
             errorType ? "uncorrected" : "corrected");
    return get_ull(device, key, eccCounts);
}

EXPORT nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t device, unsigned int *corrRows, unsigned int *uncRows, unsigned int *isPending, unsigned int *failureOccurred) {
    ENTER(device);
    if (!corrRows || !uncRows || !isPending || !failureOccurred) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int c, u, p, f;
    CHECK(get_uint(device, "remapped.correctable", &c));
    CHECK(get_uint(device, "remapped.uncorrectable", &u));
    CHECK(get_uint(device, "remapped.pending", &p));
    CHECK(get_uint(device, "remapped.failure", &f));
    *corrRows = c;
    *uncRows = u;
    *isPending = p;
    *failureOccurred = f;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetRetiredPages(nvmlDevice_t device, unsigned int cause, unsigned int *pageCount, unsigned long long *addresses) {
    ENTER(device);
    if (!pageCount || cause > 1) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int n;
    CHECK(get_uint(device, cause ? "retired.double" : "retired.single", &n));
    if (*pageCount < n || (n && !addresses)) {
        *pageCount = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned int i = 0; i < n; i++) addresses[i] = 0x100000ULL * (i + 1) + cause; /* page addresses */
    *pageCount = n;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetRetiredPagesPendingStatus(nvmlDevice_t device, nvmlEnableState_t *isPending) {
    ENTER(device);
    if (!isPending) return NVML_ERROR_INVALID_ARGUMENT;
    return get_uint(device, "retired.pending", isPending);
}
