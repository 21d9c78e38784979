// Dynamic loss scaling (backoff, growth after a window of finite steps, restore) and the
// non-finite guard (skips, counts, stops at the limit with a clear error).
#include "ddpm/trainer/step_guard.h"
#include "testing/testing.h"

namespace {
using namespace ddpm::trainer;

TEST(DynamicLossScale, BacksOffAndGrows) {
  DynamicLossScale s(true, 1024.0, 2.0, 0.5, 3);
  s.update(false);
  EXPECT_EQ(s.scale(), 512.0);
  s.update(true);
  s.update(true);
  EXPECT_EQ(s.scale(), 512.0);
  EXPECT_EQ(s.good_steps(), 2);
  s.update(true);
  EXPECT_EQ(s.scale(), 1024.0);
  EXPECT_EQ(s.good_steps(), 0);
  s.update(true);
  s.update(false);  // a non-finite step resets the window
  EXPECT_EQ(s.scale(), 512.0);
  EXPECT_EQ(s.good_steps(), 0);
  DynamicLossScale r(true, 65536.0, 2.0, 0.5, 3);
  r.restore(s.scale(), 2);
  r.update(true);
  EXPECT_EQ(r.scale(), 1024.0);
}

TEST(DynamicLossScale, DisabledStaysOne) {
  DynamicLossScale s(false, 1024.0, 2.0, 0.5, 1);
  EXPECT_EQ(s.scale(), 1.0);
  s.update(false);
  s.update(true);
  s.restore(8.0, 1);
  EXPECT_EQ(s.scale(), 1.0);
}

TEST(NonfiniteGuard, SkipsCountsAndStopsAtTheLimit) {
  NonfiniteGuard g(3);
  EXPECT_FALSE(g.record(true, 1));
  EXPECT_TRUE(g.record(false, 2));
  EXPECT_TRUE(g.record(false, 3));
  EXPECT_FALSE(g.record(true, 4));  // a finite step resets the run
  EXPECT_EQ(g.in_row(), 0);
  EXPECT_EQ(g.total(), 2);
  EXPECT_TRUE(g.record(false, 5));
  EXPECT_TRUE(g.record(false, 6));
  try {
    g.record(false, 7);
    FAIL() << "did not stop";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("--max-nonfinite-steps"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("step 7"), std::string::npos) << e.what();
  }
  EXPECT_EQ(g.total(), 5);
}
}  // namespace
