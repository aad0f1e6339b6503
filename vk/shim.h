// Package vk's C shim: loading libvulkan, Vulkan 1.1+ queries (Properties2 and
// Features2 chains, cooperative matrix) and the validation message sink. It
// declares the few Vulkan structures it needs itself so it builds against no
// particular Vulkan header version (the binding ships 1.1.88 headers).
#ifndef DEFT_VK_SHIM_H
#define DEFT_VK_SHIM_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
	uint32_t m, n, k;
	uint32_t a_type, b_type, c_type, result_type;
	uint32_t saturating;
	uint32_t scope;
} deft_coopmat;

enum { DEFT_MAX_COOPMAT = 64 };

// Capabilities of one physical device beyond what Vulkan 1.0 reports.
typedef struct {
	uint32_t subgroup_size, subgroup_stages, subgroup_ops;
	uint32_t has_size_control_props;
	uint32_t min_subgroup_size, max_subgroup_size, max_compute_workgroup_subgroups, required_subgroup_size_stages;
	uint32_t has_driver_props;
	uint32_t driver_id;
	char driver_name[256];
	char driver_info[256];
	uint8_t device_uuid[16];
	uint8_t driver_uuid[16];
	uint32_t storage_buffer16, uniform_storage16, push_constant16;
	uint32_t storage_buffer8;
	uint32_t shader_float16, shader_int8;
	uint32_t subgroup_size_control, compute_full_subgroups;
	uint32_t cooperative_matrix;
	uint32_t vulkan_memory_model;
	uint32_t coopmat_count;
	deft_coopmat coopmat[DEFT_MAX_COOPMAT];
} deft_caps;

// Which optional structures a device supports (by core version or extension).
typedef struct {
	uint32_t driver_props;   // VK_KHR_driver_properties or 1.2
	uint32_t float16_int8;   // VK_KHR_shader_float16_int8 or 1.2
	uint32_t storage8;       // VK_KHR_8bit_storage or 1.2
	uint32_t size_control;   // VK_EXT_subgroup_size_control or 1.3
	uint32_t coopmat;        // VK_KHR_cooperative_matrix
	uint32_t pipeline_exec;  // VK_KHR_pipeline_executable_properties
	uint32_t memory_model;   // VK_KHR_vulkan_memory_model or 1.2
} deft_ext;

// Features to enable at device creation.
typedef struct {
	uint32_t storage_buffer16, uniform_storage16, push_constant16;
	uint32_t storage_buffer8;
	uint32_t shader_float16, shader_int8;
	uint32_t subgroup_size_control, compute_full_subgroups;
	uint32_t cooperative_matrix;
	uint32_t shader_int64, shader_int16;
	uint32_t pipeline_exec;
	uint32_t vulkan_memory_model;
} deft_enable;

// One compiler statistic of a pipeline (VK_KHR_pipeline_executable_properties):
// format 0 bool, 1 int64, 2 uint64, 3 float64.
typedef struct {
	char name[256];
	char description[256];
	uint32_t format;
	uint64_t u64;
	int64_t i64;
	double f64;
} deft_stat;

enum { DEFT_MAX_STATS = 64 };

// Statistics of executable 0 of a pipeline created with capture-statistics;
// returns a VkResult and the count in *count.
int deft_pipeline_stats(void *instance, void *device, uint64_t pipeline, deft_stat *out, uint32_t cap, uint32_t *count);

void *deft_load_vulkan(const char *path, char *err, size_t errlen);
uint32_t deft_instance_version(void);
int deft_query_caps(void *instance, void *physical_device, const deft_ext *ext, deft_caps *out);
void *deft_features_chain(const deft_ext *ext, const deft_enable *en);
void deft_free_features_chain(void *chain);

// Validation messages: a debug-utils messenger keeps warnings and errors in a
// bounded in-memory list that Go drains after each operation.
void *deft_messenger_create_info(void);
int deft_create_messenger(void *instance, void **messenger);
void deft_destroy_messenger(void *instance, void *messenger);
int deft_take_message(char *buf, size_t cap);
uint32_t deft_dropped_messages(void);

// Pipeline creation and descriptor writes built in C (see shim.c): returns
// a VkResult.
int deft_create_compute_pipeline(void *instance, void *device, uint64_t cache, uint32_t flags, uint64_t module,
	uint64_t layout, const uint32_t *spec_ids, const uint32_t *spec_data, uint32_t n_spec, uint64_t *out);
void *deft_update_descriptors_fn(void *instance, void *device);
int deft_update_buffer_descriptors(void *fn, void *device, uint64_t set, uint32_t n,
	const uint64_t *buffers, const uint64_t *offsets, const uint64_t *ranges);
int deft_create_layouts(void *instance, void *device, uint32_t n, uint32_t push_size, uint64_t *set_layout, uint64_t *layout);
int deft_create_descriptor_pool(void *instance, void *device, uint32_t max_sets, uint32_t n, uint64_t *pool);

// Device functions the recorder calls through the shim: recording a step
// (begin, descriptor set, dispatch) makes no Go or C allocation.
typedef struct {
	void *barrier, *copy, *submit;
	void *begin, *alloc_sets, *bind_pipeline, *bind_sets, *push, *dispatch;
	void *reset_fences, *wait_fences;
} deft_fns;
void deft_device_fns(void *instance, void *device, deft_fns *out);
void deft_cmd_barrier(void *fn, void *cmd, uint32_t src_stages, uint32_t dst_stages, uint32_t src_access, uint32_t dst_access);
void deft_cmd_copy(void *fn, void *cmd, uint64_t src, uint64_t dst, uint64_t src_off, uint64_t dst_off, uint64_t n);
int deft_queue_submit(void *fn, void *queue, void *cmd, uint64_t fence);
int deft_begin_commands(const deft_fns *fns, void *cmd);
int deft_alloc_set(const deft_fns *fns, void *device, uint64_t pool, uint64_t set_layout, uint64_t *set);
void deft_cmd_dispatch(const deft_fns *fns, void *cmd, uint64_t pipeline, uint64_t layout, uint64_t set,
	uint32_t push_size, const void *push, uint32_t x, uint32_t y, uint32_t z);
int deft_reset_fence(const deft_fns *fns, void *device, uint64_t fence);
int deft_wait_fence(const deft_fns *fns, void *device, uint64_t fence, uint64_t timeout_ns);

#endif
