// RoPE's rotation of one adjacent pair (llama.cpp's "normal" mode), shared
// by rope.comp and rope_kv.comp so both round alike. theta is reduced to
// [-pi, pi] in two steps (Cody-Waite) before cos/sin, whose precision
// Vulkan only bounds on that range.
const float TWO_PI_HI = 6.28125;                 // exact in 8 bits
const float TWO_PI_LO = 1.9353071795864769e-3;   // 2*pi - TWO_PI_HI

vec2 rotate(vec2 v, float theta) {
    float t = round(theta * 0.15915494309189535);
    float r = (theta - t * TWO_PI_HI) - t * TWO_PI_LO;
    float c = cos(r);
    float s = sin(r);
    return vec2(v.x * c - v.y * s, v.x * s + v.y * c);
}
