/* half.h - IEEE half precision and bfloat16 <-> float, in plain C. Stored segment embeddings,
 * model files and the backends all use these, so they live in base/.
 */
#ifndef MD_BASE_HALF_H
#define MD_BASE_HALF_H

#include <stdint.h>

/* The F32 -> F16/BF16 conversions round to nearest even; F16 keeps subnormals, Inf and NaN. */
float md_f16_to_f32(uint16_t h);
float md_bf16_to_f32(uint16_t h);
uint16_t md_f32_to_f16(float f);
uint16_t md_f32_to_bf16(float f);

#endif
