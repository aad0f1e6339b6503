#include "shim.h"

#include <dlfcn.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef void (*deft_pfn)(void);
typedef deft_pfn (*deft_gipa_fn)(void *instance, const char *name);

static deft_gipa_fn gipa;

void *deft_load_vulkan(const char *path, char *err, size_t errlen) {
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) {
		const char *e = dlerror();
		snprintf(err, errlen, "%s", e ? e : "dlopen failed");
		return NULL;
	}
	gipa = (deft_gipa_fn)dlsym(lib, "vkGetInstanceProcAddr");
	if (gipa == NULL) {
		snprintf(err, errlen, "%s has no vkGetInstanceProcAddr", path);
		return NULL;
	}
	return (void *)gipa;
}

uint32_t deft_instance_version(void) {
	typedef int32_t (*fn_t)(uint32_t *);
	fn_t fn = gipa ? (fn_t)gipa(NULL, "vkEnumerateInstanceVersion") : NULL;
	uint32_t v = 1u << 22; // 1.0: the entry point only exists from 1.1 on
	if (fn != NULL && fn(&v) != 0) v = 1u << 22;
	return v;
}

// Structure-type values from the Vulkan registry.
enum {
	ST_PROPERTIES2 = 1000059001,
	ST_FEATURES2 = 1000059000,
	ST_SUBGROUP_PROPS = 1000094000,
	ST_ID_PROPS = 1000071004,
	ST_DRIVER_PROPS = 1000196000,
	ST_SIZE_CONTROL_PROPS = 1000225000,
	ST_SIZE_CONTROL_FEATURES = 1000225002,
	ST_16BIT_FEATURES = 1000083000,
	ST_8BIT_FEATURES = 1000177000,
	ST_F16_I8_FEATURES = 1000082000,
	ST_COOPMAT_FEATURES = 1000506000,
	ST_COOPMAT_PROPS = 1000506001,
	ST_MEMORY_MODEL_FEATURES = 1000211000,
	ST_DEBUG_MESSENGER_CI = 1000128004,
	ST_PEXEC_FEATURES = 1000269000,
	ST_PIPELINE_EXECUTABLE_INFO = 1000269003,
	ST_PIPELINE_EXECUTABLE_STATISTIC = 1000269004,
};

typedef struct { uint32_t sType; void *pNext; } base_t;
typedef struct { uint32_t sType; void *pNext; uint8_t properties[1024]; } props2_t; // VkPhysicalDeviceProperties is 824 bytes
typedef struct { uint32_t sType; void *pNext; uint32_t features[55]; } features2_t;
typedef struct { uint32_t sType; void *pNext; uint32_t subgroupSize, supportedStages, supportedOperations, quadAll; } subgroup_props_t;
typedef struct { uint32_t sType; void *pNext; uint8_t deviceUUID[16], driverUUID[16], deviceLUID[8]; uint32_t nodeMask, luidValid; } id_props_t;
typedef struct { uint32_t sType; void *pNext; uint32_t driverID; char name[256]; char info[256]; uint8_t conformance[4]; } driver_props_t;
typedef struct { uint32_t sType; void *pNext; uint32_t minSize, maxSize, maxComputeWorkgroupSubgroups, requiredStages; } size_control_props_t;
typedef struct { uint32_t sType; void *pNext; uint32_t sizeControl, computeFull; } size_control_features_t;
typedef struct { uint32_t sType; void *pNext; uint32_t storageBuffer, uniformAndStorage, pushConstant, inputOutput; } storage16_features_t;
typedef struct { uint32_t sType; void *pNext; uint32_t storageBuffer, uniformAndStorage, pushConstant; } storage8_features_t;
typedef struct { uint32_t sType; void *pNext; uint32_t float16, int8; } f16i8_features_t;
typedef struct { uint32_t sType; void *pNext; uint32_t coopmat, robust; } coopmat_features_t;
typedef struct { uint32_t sType; void *pNext; uint32_t info; } pexec_features_t;
typedef struct { uint32_t sType; void *pNext; uint32_t model, deviceScope, chains; } memory_model_features_t;
typedef struct { uint32_t sType; const void *pNext; uint64_t pipeline; uint32_t executableIndex; } pexec_info_t;
typedef struct {
	uint32_t sType; void *pNext;
	char name[256]; char description[256];
	uint32_t format;
	union { uint32_t b32; int64_t i64; uint64_t u64; double f64; } value;
} pexec_stat_t;
typedef struct {
	uint32_t sType; void *pNext;
	uint32_t m, n, k, a, b, c, result, saturating, scope;
} coopmat_props_t;

static deft_pfn instance_fn(void *instance, const char *core, const char *khr) {
	deft_pfn f = gipa(instance, core);
	if (f == NULL && khr != NULL) f = gipa(instance, khr);
	return f;
}

int deft_query_caps(void *instance, void *pd, const deft_ext *ext, deft_caps *out) {
	memset(out, 0, sizeof(*out));
	typedef void (*props2_fn)(void *, void *);
	props2_fn get_props = (props2_fn)instance_fn(instance, "vkGetPhysicalDeviceProperties2", "vkGetPhysicalDeviceProperties2KHR");
	props2_fn get_feats = (props2_fn)instance_fn(instance, "vkGetPhysicalDeviceFeatures2", "vkGetPhysicalDeviceFeatures2KHR");
	if (get_props == NULL || get_feats == NULL) return -1;

	props2_t p2 = {ST_PROPERTIES2, NULL, {0}};
	subgroup_props_t sg = {ST_SUBGROUP_PROPS, NULL, 0, 0, 0, 0};
	id_props_t id = {ST_ID_PROPS, NULL, {0}, {0}, {0}, 0, 0};
	driver_props_t drv; memset(&drv, 0, sizeof drv); drv.sType = ST_DRIVER_PROPS;
	size_control_props_t scp = {ST_SIZE_CONTROL_PROPS, NULL, 0, 0, 0, 0};
	p2.pNext = &sg; sg.pNext = &id;
	base_t *tail = (base_t *)&id;
	if (ext->driver_props) { tail->pNext = &drv; tail = (base_t *)&drv; }
	if (ext->size_control) { tail->pNext = &scp; tail = (base_t *)&scp; }
	get_props(pd, &p2);
	out->subgroup_size = sg.subgroupSize;
	out->subgroup_stages = sg.supportedStages;
	out->subgroup_ops = sg.supportedOperations;
	memcpy(out->device_uuid, id.deviceUUID, 16);
	memcpy(out->driver_uuid, id.driverUUID, 16);
	if (ext->driver_props) {
		out->has_driver_props = 1;
		out->driver_id = drv.driverID;
		memcpy(out->driver_name, drv.name, 256); out->driver_name[255] = 0;
		memcpy(out->driver_info, drv.info, 256); out->driver_info[255] = 0;
	}
	if (ext->size_control) {
		out->has_size_control_props = 1;
		out->min_subgroup_size = scp.minSize;
		out->max_subgroup_size = scp.maxSize;
		out->max_compute_workgroup_subgroups = scp.maxComputeWorkgroupSubgroups;
		out->required_subgroup_size_stages = scp.requiredStages;
	}

	features2_t f2; memset(&f2, 0, sizeof f2); f2.sType = ST_FEATURES2;
	storage16_features_t s16 = {ST_16BIT_FEATURES, NULL, 0, 0, 0, 0};
	storage8_features_t s8 = {ST_8BIT_FEATURES, NULL, 0, 0, 0};
	f16i8_features_t fi = {ST_F16_I8_FEATURES, NULL, 0, 0};
	size_control_features_t scf = {ST_SIZE_CONTROL_FEATURES, NULL, 0, 0};
	coopmat_features_t cmf = {ST_COOPMAT_FEATURES, NULL, 0, 0};
	memory_model_features_t mmf = {ST_MEMORY_MODEL_FEATURES, NULL, 0, 0, 0};
	f2.pNext = &s16; tail = (base_t *)&s16;
	if (ext->storage8) { tail->pNext = &s8; tail = (base_t *)&s8; }
	if (ext->float16_int8) { tail->pNext = &fi; tail = (base_t *)&fi; }
	if (ext->size_control) { tail->pNext = &scf; tail = (base_t *)&scf; }
	if (ext->coopmat) { tail->pNext = &cmf; tail = (base_t *)&cmf; }
	if (ext->memory_model) { tail->pNext = &mmf; tail = (base_t *)&mmf; }
	get_feats(pd, &f2);
	// Our kernels' atomics use Device scope, which a device with the memory
	// model enabled accepts only with vulkanMemoryModelDeviceScope too.
	out->vulkan_memory_model = mmf.model && mmf.deviceScope;
	out->storage_buffer16 = s16.storageBuffer;
	out->uniform_storage16 = s16.uniformAndStorage;
	out->push_constant16 = s16.pushConstant;
	out->storage_buffer8 = s8.storageBuffer;
	out->shader_float16 = fi.float16;
	out->shader_int8 = fi.int8;
	out->subgroup_size_control = scf.sizeControl;
	out->compute_full_subgroups = scf.computeFull;
	out->cooperative_matrix = cmf.coopmat;

	if (ext->coopmat) {
		typedef int32_t (*cm_fn)(void *, uint32_t *, coopmat_props_t *);
		cm_fn get_cm = (cm_fn)gipa(instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR");
		uint32_t n = 0;
		if (get_cm != NULL && get_cm(pd, &n, NULL) >= 0 && n > 0) {
			coopmat_props_t *cm = calloc(n, sizeof *cm);
			if (cm == NULL) return -2;
			for (uint32_t i = 0; i < n; i++) cm[i].sType = ST_COOPMAT_PROPS;
			if (get_cm(pd, &n, cm) >= 0) {
				if (n > DEFT_MAX_COOPMAT) n = DEFT_MAX_COOPMAT;
				out->coopmat_count = n;
				for (uint32_t i = 0; i < n; i++) {
					deft_coopmat *d = &out->coopmat[i];
					d->m = cm[i].m; d->n = cm[i].n; d->k = cm[i].k;
					d->a_type = cm[i].a; d->b_type = cm[i].b; d->c_type = cm[i].c;
					d->result_type = cm[i].result; d->saturating = cm[i].saturating; d->scope = cm[i].scope;
				}
			}
			free(cm);
		}
	}
	return 0;
}

// The chain is one allocation so that freeing it cannot miss a link.
typedef struct {
	features2_t f2;
	storage16_features_t s16;
	storage8_features_t s8;
	f16i8_features_t fi;
	size_control_features_t scf;
	coopmat_features_t cmf;
	pexec_features_t pef;
	memory_model_features_t mmf;
} feature_chain_t;

void *deft_features_chain(const deft_ext *ext, const deft_enable *en) {
	feature_chain_t *c = calloc(1, sizeof *c);
	if (c == NULL) return NULL;
	c->f2.sType = ST_FEATURES2;
	// VkPhysicalDeviceFeatures members 40 and 41 (0-based) are shaderInt64 and shaderInt16.
	c->f2.features[40] = en->shader_int64;
	c->f2.features[41] = en->shader_int16;
	c->s16.sType = ST_16BIT_FEATURES;
	c->s16.storageBuffer = en->storage_buffer16;
	c->s16.uniformAndStorage = en->uniform_storage16;
	c->s16.pushConstant = en->push_constant16;
	c->f2.pNext = &c->s16;
	base_t *tail = (base_t *)&c->s16;
	if (ext->storage8) {
		c->s8.sType = ST_8BIT_FEATURES;
		c->s8.storageBuffer = en->storage_buffer8;
		tail->pNext = &c->s8; tail = (base_t *)&c->s8;
	}
	if (ext->float16_int8) {
		c->fi.sType = ST_F16_I8_FEATURES;
		c->fi.float16 = en->shader_float16;
		c->fi.int8 = en->shader_int8;
		tail->pNext = &c->fi; tail = (base_t *)&c->fi;
	}
	if (ext->size_control) {
		c->scf.sType = ST_SIZE_CONTROL_FEATURES;
		c->scf.sizeControl = en->subgroup_size_control;
		c->scf.computeFull = en->compute_full_subgroups;
		tail->pNext = &c->scf; tail = (base_t *)&c->scf;
	}
	if (ext->coopmat) {
		c->cmf.sType = ST_COOPMAT_FEATURES;
		c->cmf.coopmat = en->cooperative_matrix;
		tail->pNext = &c->cmf; tail = (base_t *)&c->cmf;
	}
	if (ext->pipeline_exec) {
		c->pef.sType = ST_PEXEC_FEATURES;
		c->pef.info = en->pipeline_exec;
		tail->pNext = &c->pef; tail = (base_t *)&c->pef;
	}
	if (ext->memory_model && en->vulkan_memory_model) {
		c->mmf.sType = ST_MEMORY_MODEL_FEATURES;
		c->mmf.model = 1;
		c->mmf.deviceScope = 1;
		tail->pNext = &c->mmf; tail = (base_t *)&c->mmf;
	}
	return c;
}

int deft_pipeline_stats(void *instance, void *device, uint64_t pipeline, deft_stat *out, uint32_t cap, uint32_t *count) {
	typedef deft_pfn (*gdpa_fn)(void *, const char *);
	typedef int32_t (*stats_fn)(void *, const pexec_info_t *, uint32_t *, pexec_stat_t *);
	*count = 0;
	gdpa_fn gdpa = (gdpa_fn)gipa(instance, "vkGetDeviceProcAddr");
	stats_fn get = gdpa ? (stats_fn)gdpa(device, "vkGetPipelineExecutableStatisticsKHR") : NULL;
	if (get == NULL) return -7; // VK_ERROR_EXTENSION_NOT_PRESENT
	pexec_info_t info = {ST_PIPELINE_EXECUTABLE_INFO, NULL, pipeline, 0};
	uint32_t n = 0;
	int32_t r = get(device, &info, &n, NULL);
	if (r != 0) return r;
	if (n > cap) n = cap;
	pexec_stat_t *st = calloc(n ? n : 1, sizeof *st);
	if (st == NULL) return -1; // VK_ERROR_OUT_OF_HOST_MEMORY
	for (uint32_t i = 0; i < n; i++) st[i].sType = ST_PIPELINE_EXECUTABLE_STATISTIC;
	r = get(device, &info, &n, st);
	if (r >= 0) {
		for (uint32_t i = 0; i < n; i++) {
			memcpy(out[i].name, st[i].name, sizeof out[i].name);
			memcpy(out[i].description, st[i].description, sizeof out[i].description);
			out[i].name[255] = out[i].description[255] = 0;
			out[i].format = st[i].format;
			out[i].u64 = st[i].value.u64;
			out[i].i64 = st[i].value.i64;
			out[i].f64 = st[i].value.f64;
			if (st[i].format == 0) out[i].u64 = st[i].value.b32;
		}
		*count = n;
	}
	free(st);
	return r;
}

void deft_free_features_chain(void *chain) { free(chain); }

// ---- validation messages ----

enum { MSG_SLOTS = 64, MSG_LEN = 2048 };
static pthread_mutex_t msg_mu = PTHREAD_MUTEX_INITIALIZER;
static char msg_buf[MSG_SLOTS][MSG_LEN];
static uint32_t msg_head, msg_count, msg_dropped;

typedef struct {
	uint32_t sType; const void *pNext; uint32_t flags;
	const char *pMessageIdName; int32_t messageIdNumber; const char *pMessage;
} callback_data_t;

static uint32_t messenger_callback(uint32_t severity, uint32_t types, const callback_data_t *data, void *user) {
	(void)types; (void)user;
	pthread_mutex_lock(&msg_mu);
	if (msg_count == MSG_SLOTS) {
		msg_dropped++;
	} else {
		uint32_t slot = (msg_head + msg_count) % MSG_SLOTS;
		snprintf(msg_buf[slot], MSG_LEN, "[%s] %s", severity >= 0x1000 ? "error" : "warning",
			data && data->pMessage ? data->pMessage : "(no message)");
		msg_count++;
	}
	pthread_mutex_unlock(&msg_mu);
	return 0; // VK_FALSE: never abort the call
}

typedef struct {
	uint32_t sType; const void *pNext; uint32_t flags;
	uint32_t severity, types;
	void *callback; void *user;
} messenger_ci_t;

static messenger_ci_t messenger_ci = {
	ST_DEBUG_MESSENGER_CI, NULL, 0,
	0x100 | 0x1000,   // warnings and errors
	0x1 | 0x2 | 0x4,  // general, validation, performance
	(void *)messenger_callback, NULL,
};

void *deft_messenger_create_info(void) { return &messenger_ci; }

int deft_create_messenger(void *instance, void **messenger) {
	typedef int32_t (*fn_t)(void *, const messenger_ci_t *, const void *, void **);
	fn_t fn = (fn_t)gipa(instance, "vkCreateDebugUtilsMessengerEXT");
	if (fn == NULL) return -1;
	return fn(instance, &messenger_ci, NULL, messenger);
}

void deft_destroy_messenger(void *instance, void *messenger) {
	typedef void (*fn_t)(void *, void *, const void *);
	fn_t fn = (fn_t)gipa(instance, "vkDestroyDebugUtilsMessengerEXT");
	if (fn != NULL && messenger != NULL) fn(instance, messenger, NULL);
}

int deft_take_message(char *buf, size_t cap) {
	int got = 0;
	pthread_mutex_lock(&msg_mu);
	if (msg_count > 0) {
		snprintf(buf, cap, "%s", msg_buf[msg_head]);
		msg_head = (msg_head + 1) % MSG_SLOTS;
		msg_count--;
		got = 1;
	}
	pthread_mutex_unlock(&msg_mu);
	return got;
}

uint32_t deft_dropped_messages(void) {
	pthread_mutex_lock(&msg_mu);
	uint32_t d = msg_dropped;
	msg_dropped = 0;
	pthread_mutex_unlock(&msg_mu);
	return d;
}

// Calls whose create infos nest arrays of structures. vulkan-go copies
// nested struct arrays into C memory that a finalizer frees whenever the Go
// collector runs, possibly during the call (the validation layer was seen
// copying freed memory in vkCreateComputePipelines), so these are built
// here, in C, for the duration of the call.

typedef struct { uint32_t constantID, offset; size_t size; } spec_entry_t;
typedef struct { uint32_t count; const spec_entry_t *entries; size_t dataSize; const void *data; } spec_info_t;
typedef struct {
	uint32_t sType; const void *pNext; uint32_t flags; uint32_t stage;
	uint64_t module; const char *pName; const spec_info_t *spec;
} stage_info_t;
typedef struct {
	uint32_t sType; const void *pNext; uint32_t flags; stage_info_t stage;
	uint64_t layout; uint64_t basePipeline; int32_t basePipelineIndex;
} compute_info_t;
enum { ST_SHADER_STAGE_CREATE_INFO = 18, ST_COMPUTE_PIPELINE_CREATE_INFO = 29, STAGE_COMPUTE = 0x20 };

int deft_create_compute_pipeline(void *instance, void *device, uint64_t cache, uint32_t flags, uint64_t module,
		uint64_t layout, const uint32_t *spec_ids, const uint32_t *spec_data, uint32_t n_spec, uint64_t *out) {
	typedef deft_pfn (*gdpa_fn)(void *, const char *);
	typedef int32_t (*create_fn)(void *, uint64_t, uint32_t, const compute_info_t *, const void *, uint64_t *);
	gdpa_fn gdpa = (gdpa_fn)gipa(instance, "vkGetDeviceProcAddr");
	create_fn create = gdpa ? (create_fn)gdpa(device, "vkCreateComputePipelines") : NULL;
	if (create == NULL) return -3; // VK_ERROR_INITIALIZATION_FAILED
	spec_entry_t *entries = calloc(n_spec ? n_spec : 1, sizeof *entries);
	if (entries == NULL) return -1;
	for (uint32_t i = 0; i < n_spec; i++) {
		entries[i].constantID = spec_ids[i];
		entries[i].offset = 4 * i;
		entries[i].size = 4;
	}
	spec_info_t spec = {n_spec, entries, 4 * (size_t)n_spec, spec_data};
	compute_info_t ci = {0};
	ci.sType = ST_COMPUTE_PIPELINE_CREATE_INFO;
	ci.flags = flags;
	ci.stage.sType = ST_SHADER_STAGE_CREATE_INFO;
	ci.stage.stage = STAGE_COMPUTE;
	ci.stage.module = module;
	ci.stage.pName = "main";
	ci.stage.spec = n_spec ? &spec : NULL;
	ci.layout = layout;
	ci.basePipelineIndex = -1;
	int32_t r = create(device, cache, 1, &ci, NULL, out);
	free(entries);
	return r;
}

typedef struct { uint64_t buffer, offset, range; } buffer_info_t;
typedef struct {
	uint32_t sType; const void *pNext; uint64_t dstSet; uint32_t dstBinding, dstArrayElement, descriptorCount, descriptorType;
	const void *pImageInfo; const buffer_info_t *pBufferInfo; const void *pTexelBufferView;
} write_set_t;
enum { ST_WRITE_DESCRIPTOR_SET = 35, DESCRIPTOR_STORAGE_BUFFER = 7, DEFT_MAX_BINDINGS = 64 };

void *deft_update_descriptors_fn(void *instance, void *device) {
	typedef deft_pfn (*gdpa_fn)(void *, const char *);
	gdpa_fn gdpa = (gdpa_fn)gipa(instance, "vkGetDeviceProcAddr");
	return gdpa ? (void *)gdpa(device, "vkUpdateDescriptorSets") : NULL;
}

// Writes storage buffers 0..n-1 of set (n at most DEFT_MAX_BINDINGS).
int deft_update_buffer_descriptors(void *fn, void *device, uint64_t set, uint32_t n,
		const uint64_t *buffers, const uint64_t *offsets, const uint64_t *ranges) {
	typedef void (*update_fn)(void *, uint32_t, const write_set_t *, uint32_t, const void *);
	if (fn == NULL || n > DEFT_MAX_BINDINGS) return -3;
	buffer_info_t infos[DEFT_MAX_BINDINGS];
	write_set_t ws[DEFT_MAX_BINDINGS];
	memset(ws, 0, sizeof ws);
	for (uint32_t i = 0; i < n; i++) {
		infos[i].buffer = buffers[i];
		infos[i].offset = offsets[i];
		infos[i].range = ranges[i];
		ws[i].sType = ST_WRITE_DESCRIPTOR_SET;
		ws[i].dstSet = set;
		ws[i].dstBinding = i;
		ws[i].descriptorCount = 1;
		ws[i].descriptorType = DESCRIPTOR_STORAGE_BUFFER;
		ws[i].pBufferInfo = &infos[i];
	}
	((update_fn)fn)(device, n, ws, 0, NULL);
	return 0;
}

typedef struct { uint32_t binding, type, count, stages; const void *samplers; } set_binding_t;
typedef struct { uint32_t sType; const void *pNext; uint32_t flags; uint32_t count; const set_binding_t *bindings; } set_layout_info_t;
typedef struct { uint32_t stages, offset, size; } push_range_t;
typedef struct {
	uint32_t sType; const void *pNext; uint32_t flags; uint32_t setCount; const uint64_t *sets;
	uint32_t pushCount; const push_range_t *pushes;
} pipeline_layout_info_t;
enum { ST_SET_LAYOUT_CREATE_INFO = 32, ST_PIPELINE_LAYOUT_CREATE_INFO = 30 };

// Creates the descriptor set layout of n storage buffers (bindings 0..n-1)
// and a pipeline layout with it and push_size bytes of push constants.
int deft_create_layouts(void *instance, void *device, uint32_t n, uint32_t push_size, uint64_t *set_layout, uint64_t *layout) {
	typedef deft_pfn (*gdpa_fn)(void *, const char *);
	typedef int32_t (*set_fn)(void *, const set_layout_info_t *, const void *, uint64_t *);
	typedef int32_t (*layout_fn)(void *, const pipeline_layout_info_t *, const void *, uint64_t *);
	gdpa_fn gdpa = (gdpa_fn)gipa(instance, "vkGetDeviceProcAddr");
	set_fn make_set = gdpa ? (set_fn)gdpa(device, "vkCreateDescriptorSetLayout") : NULL;
	layout_fn make_layout = gdpa ? (layout_fn)gdpa(device, "vkCreatePipelineLayout") : NULL;
	if (make_set == NULL || make_layout == NULL || n > DEFT_MAX_BINDINGS) return -3;
	set_binding_t binds[DEFT_MAX_BINDINGS];
	for (uint32_t i = 0; i < n; i++) {
		binds[i] = (set_binding_t){i, DESCRIPTOR_STORAGE_BUFFER, 1, STAGE_COMPUTE, NULL};
	}
	set_layout_info_t si = {ST_SET_LAYOUT_CREATE_INFO, NULL, 0, n, binds};
	int32_t r = make_set(device, &si, NULL, set_layout);
	if (r != 0) return r;
	push_range_t push = {STAGE_COMPUTE, 0, push_size};
	pipeline_layout_info_t li = {ST_PIPELINE_LAYOUT_CREATE_INFO, NULL, 0, 1, set_layout, push_size ? 1 : 0, &push};
	return make_layout(device, &li, NULL, layout);
}

typedef struct { uint32_t type, count; } pool_size_t;
typedef struct { uint32_t sType; const void *pNext; uint32_t flags, maxSets, sizeCount; const pool_size_t *sizes; } pool_info_t;
enum { ST_DESCRIPTOR_POOL_CREATE_INFO = 33 };

// Creates a descriptor pool of max_sets sets and n storage-buffer descriptors.
int deft_create_descriptor_pool(void *instance, void *device, uint32_t max_sets, uint32_t n, uint64_t *pool) {
	typedef deft_pfn (*gdpa_fn)(void *, const char *);
	typedef int32_t (*pool_fn)(void *, const pool_info_t *, const void *, uint64_t *);
	gdpa_fn gdpa = (gdpa_fn)gipa(instance, "vkGetDeviceProcAddr");
	pool_fn make = gdpa ? (pool_fn)gdpa(device, "vkCreateDescriptorPool") : NULL;
	if (make == NULL) return -3;
	pool_size_t size = {DESCRIPTOR_STORAGE_BUFFER, n};
	pool_info_t pi = {ST_DESCRIPTOR_POOL_CREATE_INFO, NULL, 0, max_sets, 1, &size};
	return make(device, &pi, NULL, pool);
}

// Recording and submission calls whose arguments are arrays of structures
// (see above), through function pointers looked up once per device.
typedef struct { uint32_t sType; const void *pNext; uint32_t src, dst; } memory_barrier_t;
typedef struct { uint64_t src, dst, size; } buffer_copy_t;
typedef struct {
	uint32_t sType; const void *pNext; uint32_t waitCount; const void *waits; const void *waitStages;
	uint32_t cmdCount; void *const *cmds; uint32_t signalCount; const void *signals;
} submit_info_t;
enum { ST_MEMORY_BARRIER = 46, ST_SUBMIT_INFO = 4 };

void deft_device_fns(void *instance, void *device, deft_fns *out) {
	typedef deft_pfn (*gdpa_fn)(void *, const char *);
	gdpa_fn gdpa = (gdpa_fn)gipa(instance, "vkGetDeviceProcAddr");
	out->barrier = gdpa ? (void *)gdpa(device, "vkCmdPipelineBarrier") : NULL;
	out->copy = gdpa ? (void *)gdpa(device, "vkCmdCopyBuffer") : NULL;
	out->submit = gdpa ? (void *)gdpa(device, "vkQueueSubmit") : NULL;
	out->begin = gdpa ? (void *)gdpa(device, "vkBeginCommandBuffer") : NULL;
	out->alloc_sets = gdpa ? (void *)gdpa(device, "vkAllocateDescriptorSets") : NULL;
	out->bind_pipeline = gdpa ? (void *)gdpa(device, "vkCmdBindPipeline") : NULL;
	out->bind_sets = gdpa ? (void *)gdpa(device, "vkCmdBindDescriptorSets") : NULL;
	out->push = gdpa ? (void *)gdpa(device, "vkCmdPushConstants") : NULL;
	out->dispatch = gdpa ? (void *)gdpa(device, "vkCmdDispatch") : NULL;
	out->reset_fences = gdpa ? (void *)gdpa(device, "vkResetFences") : NULL;
	out->wait_fences = gdpa ? (void *)gdpa(device, "vkWaitForFences") : NULL;
}

void deft_cmd_barrier(void *fn, void *cmd, uint32_t src_stages, uint32_t dst_stages, uint32_t src_access, uint32_t dst_access) {
	typedef void (*barrier_fn)(void *, uint32_t, uint32_t, uint32_t, uint32_t, const memory_barrier_t *, uint32_t, const void *, uint32_t, const void *);
	memory_barrier_t b = {ST_MEMORY_BARRIER, NULL, src_access, dst_access};
	((barrier_fn)fn)(cmd, src_stages, dst_stages, 0, 1, &b, 0, NULL, 0, NULL);
}

void deft_cmd_copy(void *fn, void *cmd, uint64_t src, uint64_t dst, uint64_t src_off, uint64_t dst_off, uint64_t n) {
	typedef void (*copy_fn)(void *, uint64_t, uint64_t, uint32_t, const buffer_copy_t *);
	buffer_copy_t c = {src_off, dst_off, n};
	((copy_fn)fn)(cmd, src, dst, 1, &c);
}

int deft_queue_submit(void *fn, void *queue, void *cmd, uint64_t fence) {
	typedef int32_t (*submit_fn)(void *, uint32_t, const submit_info_t *, uint64_t);
	void *cmds[1] = {cmd};
	submit_info_t si = {ST_SUBMIT_INFO, NULL, 0, NULL, NULL, 1, cmds, 0, NULL};
	return ((submit_fn)fn)(queue, 1, &si, fence);
}

typedef struct { uint32_t sType; const void *pNext; uint32_t flags; const void *inheritance; } begin_info_t;
typedef struct {
	uint32_t sType; const void *pNext; uint64_t pool; uint32_t count; const uint64_t *layouts;
} set_alloc_info_t;
enum { ST_COMMAND_BUFFER_BEGIN_INFO = 42, ST_DESCRIPTOR_SET_ALLOCATE_INFO = 34, BIND_POINT_COMPUTE = 1 };

// Begins recording cmd (no flags: a recorded buffer may be submitted again).
int deft_begin_commands(const deft_fns *fns, void *cmd) {
	typedef int32_t (*begin_fn)(void *, const begin_info_t *);
	begin_info_t bi = {ST_COMMAND_BUFFER_BEGIN_INFO, NULL, 0, NULL};
	return ((begin_fn)fns->begin)(cmd, &bi);
}

// Allocates one descriptor set of set_layout from pool; returns a VkResult.
int deft_alloc_set(const deft_fns *fns, void *device, uint64_t pool, uint64_t set_layout, uint64_t *set) {
	typedef int32_t (*alloc_fn)(void *, const set_alloc_info_t *, uint64_t *);
	set_alloc_info_t ai = {ST_DESCRIPTOR_SET_ALLOCATE_INFO, NULL, pool, 1, &set_layout};
	return ((alloc_fn)fns->alloc_sets)(device, &ai, set);
}

// Records a compute dispatch: pipeline, descriptor set 0, push constants
// (push_size bytes, copied into the command buffer during the call) and
// x*y*z workgroups.
void deft_cmd_dispatch(const deft_fns *fns, void *cmd, uint64_t pipeline, uint64_t layout, uint64_t set,
	uint32_t push_size, const void *push, uint32_t x, uint32_t y, uint32_t z) {
	typedef void (*bind_pipeline_fn)(void *, uint32_t, uint64_t);
	typedef void (*bind_sets_fn)(void *, uint32_t, uint64_t, uint32_t, uint32_t, const uint64_t *, uint32_t, const uint32_t *);
	typedef void (*push_fn)(void *, uint64_t, uint32_t, uint32_t, uint32_t, const void *);
	typedef void (*dispatch_fn)(void *, uint32_t, uint32_t, uint32_t);
	((bind_pipeline_fn)fns->bind_pipeline)(cmd, BIND_POINT_COMPUTE, pipeline);
	((bind_sets_fn)fns->bind_sets)(cmd, BIND_POINT_COMPUTE, layout, 0, 1, &set, 0, NULL);
	if (push_size > 0) {
		((push_fn)fns->push)(cmd, layout, STAGE_COMPUTE, 0, push_size, push);
	}
	((dispatch_fn)fns->dispatch)(cmd, x, y, z);
}

// Resets one fence; returns a VkResult.
int deft_reset_fence(const deft_fns *fns, void *device, uint64_t fence) {
	typedef int32_t (*reset_fn)(void *, uint32_t, const uint64_t *);
	return ((reset_fn)fns->reset_fences)(device, 1, &fence);
}

// Waits for one fence at most timeout_ns; returns a VkResult.
int deft_wait_fence(const deft_fns *fns, void *device, uint64_t fence, uint64_t timeout_ns) {
	typedef int32_t (*wait_fn)(void *, uint32_t, const uint64_t *, uint32_t, uint64_t);
	return ((wait_fn)fns->wait_fences)(device, 1, &fence, 1, timeout_ns);
}
