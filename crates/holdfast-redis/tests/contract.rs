//! The room contract suite: every case runs on the memory backend, on a real Redis (two
//! nodes) and on a real 3-master Redis Cluster (two nodes), and must behave the same on all.
#![allow(clippy::unwrap_used)]

#[path = "contract/cases.rs"]
mod cases;
#[path = "contract/harness.rs"]
mod harness;

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $name() {
                super::cases::$name(super::harness::Backend::Memory).await
            })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $name() {
                super::cases::$name(super::harness::Backend::Redis).await
            })*
        }
        mod redis_cluster {
            $(#[tokio::test]
            async fn $name() {
                super::cases::$name(super::harness::Backend::RedisCluster).await
            })*
        }
    };
}

contract!(
    the_authority_sets_the_state_and_a_joiner_gets_it_with_the_events_after,
    a_resume_past_the_buffer_recovers_from_the_state,
    first_member_holds_authority,
    a_second_member_is_announced_and_listed,
    player_ids_are_never_reused,
    a_full_room_refuses_and_changes_nothing,
    a_fresh_join_replaces_an_away_membership_of_the_same_user,
    a_retried_join_of_the_same_session_converges,
    leave_replies_left_and_tells_the_others,
    leave_passes_authority_to_the_longest_present,
    the_last_leave_drops_the_room,
    a_retried_leave_converges,
    leave_through_another_session_is_refused,
    publish_reaches_everyone_in_order_and_acks_after_the_own_copy,
    publish_by_a_non_member_is_refused,
    a_repeated_publish_id_returns_the_original_ack,
    dedupe_survives_a_resume,
    the_dedupe_window_is_bounded,
    a_claim_while_the_holder_is_online_is_refused,
    a_claim_while_the_holder_is_away_takes_authority,
    a_claim_by_the_holder_is_acknowledged_without_a_change,
    a_release_by_a_non_holder_is_refused,
    a_release_passes_authority_to_the_next_connected_member,
    a_release_with_nobody_else_leaves_no_authority,
    a_dropped_member_is_listed_away,
    an_away_holder_gets_authority_back_on_resume,
    without_restore_authority_passes_at_the_drop,
    claimed_authority_is_not_given_back,
    a_resume_replays_what_was_missed_as_sent,
    a_resume_with_nothing_missed_is_recovered_and_empty,
    a_resume_from_another_epoch_reports_the_rollback,
    a_resume_beyond_the_buffer_reports_the_exact_gap,
    a_resume_rotates_the_token_and_spends_the_old_one,
    the_previous_token_works_until_its_successor_is_used,
    a_resume_by_another_user_is_refused,
    a_resume_of_an_unknown_player_is_refused,
    a_failed_resume_consumes_nothing,
    a_late_resume_is_told_the_window_expired,
    a_resume_while_the_old_socket_looks_alive_replaces_it,
    a_retried_resume_on_the_same_session_converges,
    a_resume_into_a_dropped_room_fails,
    expiry_removes_the_member_and_passes_authority,
    the_sweep_expires_only_members_whose_window_passed,
    a_gone_nodes_members_turn_away_and_can_resume,
    tombstones_are_bounded_oldest_first,
    concurrent_joins_get_distinct_players_and_gapless_positions,
    concurrent_publishes_are_gapless_and_the_same_for_everyone,
    an_authority_race_has_exactly_one_winner,
    without_reconnection_a_drop_is_a_leave,
    a_server_publish_is_in_order_and_deduplicated,
    inspect_reports_members_authority_and_position,
    rooms_are_listed_by_prefix,
    room_names_are_any_text,
    rooms_are_independent,
    a_whole_room_drops_and_resumes_while_events_flow_and_loses_nothing,
    a_room_without_client_publish_takes_events_from_the_backend_only,
    a_room_without_authority_has_no_holder_and_refuses_claims,
    a_room_publish_rate_is_a_token_bucket,
);
